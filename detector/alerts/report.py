"""Figures of a SQLite alert store: how many findings, how many without a technique, by severity, and how many
findings one source or one key got for one technique (``reports/findings.json``; docs/findings.md).

    python -m detector.alerts.report out/demo/alerts.db [--out reports/findings.json]

``graphsentry demo`` writes the same report (with the run's provenance) after its daemon step.
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections import Counter
from pathlib import Path

from detector.alerts.ocsf import SEVERITIES, source_id


def findings_figures(db: str | Path) -> dict:
    """The figures of one store (read-only). Works on stores written before the incident columns existed."""
    if not Path(db).is_file():
        raise FileNotFoundError(f"no alert store at {db}")
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        findings = [json.loads(r[0]) for r in con.execute("SELECT finding FROM alerts")]
    finally:
        con.close()
    n = len(findings)
    tech = Counter(f["unmapped"]["technique"] for f in findings)
    sev = Counter(SEVERITIES[int(f["severity_id"])] for f in findings)
    per_src = Counter((source_id(f), f["unmapped"]["technique"]) for f in findings)
    per_key = Counter((f["unmapped"].get("group_by", "src"), str(f["unmapped"].get("key", source_id(f))),
                       f["unmapped"]["technique"]) for f in findings)
    worst = per_key.most_common(1)[0] if per_key else None
    return {
        "store": str(db),
        "findings": n,
        "records_in_findings": int(sum(f["unmapped"]["count"] for f in findings)),
        "technique_none_share": round(tech.get("none", 0) / n, 4) if n else None,
        "techniques": dict(tech.most_common(10)),
        "severity": {s: sev.get(s, 0) for s in SEVERITIES.values()},
        "severity_share": {s: round(sev.get(s, 0) / n, 4) for s in SEVERITIES.values()} if n else {},
        "max_findings_per_source_technique": max(per_src.values(), default=0),
        "max_findings_per_key_technique": max(per_key.values(), default=0),
        "max_findings_key": list(worst[0]) if worst else None,
        "grouped_by": dict(Counter(f["unmapped"].get("group_by", "src") for f in findings)),
        "ongoing": sum(int(f["unmapped"].get("windows", 1)) > 1 for f in findings),
        "max_windows": max((int(f["unmapped"].get("windows", 1)) for f in findings), default=0),
        "with_knowledge_evidence": sum(bool(f["evidences"][0]["data"].get("knowledge")) for f in findings),
        "largest": [{"title": f["finding_info"]["title"], "severity": f["severity"], "count": f["unmapped"]["count"],
                     "sources": f["unmapped"].get("sources"), "windows": f["unmapped"].get("windows", 1)}
                    for f in sorted(findings, key=lambda f: -f["unmapped"]["count"])[:5]],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m detector.alerts.report", description=__doc__.split("\n\n")[0])
    p.add_argument("db", help="SQLite alert store (alerts.db)")
    p.add_argument("--out", help="write the JSON here (default: print it)")
    a = p.parse_args(argv)
    try:
        fig = findings_figures(a.db)
    except (FileNotFoundError, sqlite3.Error) as exc:
        print(f"error: {exc}; give the path of an alert store written by `graphsentry serve`", file=sys.stderr)
        return 2
    text = json.dumps(fig, indent=1)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Blocks of the knowledge page: which technique each labelled attack class maps to, and the features' cost."""
from __future__ import annotations

from scripts.render.common import Reports, table, thousands

TECHNIQUES = "reports/knowledge_report.json"
THROUGHPUT = "reports/knowledge_throughput.json"


def render_techniques(reports: Reports) -> list[str]:
    rep = reports.get(TECHNIQUES)
    rows = []
    for name, r in rep.items():
        if not isinstance(r, dict) or "top1_expected" not in r or r["top1_expected"] is None:
            continue
        rows.append([name, thousands(r["flows"]), ", ".join(r["top"][:3]), f"{r['top1_expected']:.0%}",
                     "yes" if r["expected_in_top5"] else "no", f"{r['no_technique']:.0%}"])
    return table(["data set / attack class", "flows", "top techniques", "top-1 is an expected technique",
                  "expected in top 5", "flows with no technique"], rows)


def render_throughput(reports: Reports) -> list[str]:
    rep = reports.get(THROUGHPUT)
    rows = []
    for key, r in rep.items():
        if not key.startswith("throughput_"):
            continue
        rows.append([key.removeprefix("throughput_").replace("_per_window", " (one call per window)"),
                     thousands(r["records"]), thousands(r["windows"]), thousands(r["base_rps"]),
                     thousands(r["with_kg_rps"]), f"{r['ratio']:.2f}"])
    return table(["window", "records", "windows", "graphs records/s", "graphs + knowledge features records/s",
                  "ratio"], rows)

"""What every renderer shares: reading reports (and remembering which), their provenance, table layout."""
from __future__ import annotations

import json
from pathlib import Path


class Reports:
    """Loads JSON reports under ``root`` (a repository checkout) and records each one a renderer reads."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.used: list[str] = []
        self._cache: dict[str, dict] = {}

    def get(self, rel: str) -> dict:
        """The report at ``rel`` (a path relative to the repository root, e.g. ``reports/demo.json``)."""
        self.used.append(rel)
        if rel not in self._cache:
            path = self.root / rel
            if not path.is_file():
                raise FileNotFoundError(f"report {rel} not found: run the benchmark or evaluation that writes it")
            self._cache[rel] = json.loads(path.read_text())
        return self._cache[rel]


def provenance(report: dict) -> dict:
    """``{"commit", "date", "cores"}`` of a report, whichever key its writer used for the date."""
    runs = report.get("runs") if isinstance(report.get("runs"), list) else []
    run0 = runs[0] if runs and isinstance(runs[0], dict) else {}
    date = report.get("date") or report.get("rendered") or report.get("created") or run0.get("date")
    cores = report.get("cores") or run0.get("cores") or (report.get("machine") or {}).get("cpus") \
        or (report.get("host") or {}).get("cpus")
    return {"commit": report.get("commit"), "date": date, "cores": cores}


def commits(report: dict) -> list[str]:
    """Every commit a report names: its own and those of the runs it gathers."""
    out = [report["commit"]] if report.get("commit") else []
    runs = report.get("runs")
    if isinstance(runs, list):
        out += [r["commit"] for r in runs if isinstance(r, dict) and r.get("commit")]
    return list(dict.fromkeys(out))


def source_lines(reports: Reports, used: list[str]) -> list[str]:
    lines = []
    for rel in used:
        p = provenance(reports.get(rel))
        reports.used.pop()  # reading for provenance is not a new use
        commit = (p["commit"] or "no commit")[:10]
        date = (p["date"] or "no date")[:10]
        cores = f", {p['cores']} cores" if p["cores"] else ""
        lines.append(f"<sub>Source: `{rel}` (commit `{commit}`, {date}{cores}); "
                     f"rendered by `make docs`, do not edit by hand.</sub>  ")
    if lines:
        lines[-1] = lines[-1].rstrip()
    return lines


def table(headers: list[str], rows: list[list[object]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def f3(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def thousands(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f}"

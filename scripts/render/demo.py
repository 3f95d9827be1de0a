"""The README's demo block: the lines `make run` prints, from the ``reports/demo.json`` its last run wrote."""
from __future__ import annotations

from scripts.render.common import Reports

REPORT = "reports/demo.json"


def lines(report: dict) -> list[str]:
    """The figures as ``graphsentry demo`` prints them (same wording and rounding)."""
    d, q = report["daemon"], report["alert_quality"]
    malformed = d.get("malformed") or {}
    out = [
        f"records read {d['records_in']}, scored {d['records_scored']}, late {d['late']}, "
        f"malformed {sum(malformed.values())} {malformed or ''}".rstrip(),
        f"windows scored {d['windows_scored']}; {d['flagged_records']} flagged records -> "
        f"{d['alerts']} alerts (after aggregation per source and technique)",
    ]
    if d.get("alerts_by_severity"):
        out.append("by severity: " + ", ".join(f"{k} {v}" for k, v in sorted(d["alerts_by_severity"].items())))
    out += [
        f"records {q['records']}: malicious {q['malicious']}, benign {q['benign']}, "
        f"background/unknown {q['records'] - q['malicious'] - q['benign']}",
        f"flagged {q['flagged']}: attack recall {q['attack_recall']:.3f}, "
        f"benign false-positive rate {q['benign_fpr']:.3f}, precision {q['precision']:.3f}",
    ]
    return out


def render(reports: Reports) -> list[str]:
    r = reports.get(REPORT)
    return [f"Trained on `{r['data']['train']}`, served on `{r['data']['test']}`; the figures `make run` prints (the daemon's summary, then the alerts against the labels):",
            "", "```text", *lines(r), "```"]

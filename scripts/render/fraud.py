"""The fraud page's block: the Fraud Detection Handbook protocol, ours against the baselines run beside it."""
from __future__ import annotations

from scripts.render.common import Reports, f3, table

REPORT = "reports/fraud/report.json"
METRICS = ("auc_roc", "average_precision", "card_precision@100", "precision_at_threshold", "recall_at_threshold")


def best_baseline(summary: dict) -> str:
    """The baseline (a model whose name does not start with ``ours``) with the highest mean average precision."""
    base = {m: v["average_precision"]["mean"] for m, v in summary.items() if not m.startswith("ours")}
    return max(base, key=base.get)


def render(reports: Reports) -> list[str]:
    rep = reports.get(REPORT)
    rows = [[model, *(f"{f3(v[m]['mean'])} ± {f3(v[m]['std'])}" for m in METRICS)]
            for model, v in rep["summary"].items()]
    p = rep["protocol"]
    return [f"{p['folds']} rolling folds ({p['train_days']} training days, {p['delay_days']} days of label delay, "
            f"{p['test_days']} test days), {rep['data']['rows']:,} transactions; mean ± std over folds.", ""] + table(
        ["model", "AUROC", "average precision", "card precision@100", "precision at threshold",
         "recall at threshold"], rows)

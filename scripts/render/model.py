"""Blocks of the model page: the leave-one-network-out benchmark (``reports/generalise/report.json``)."""
from __future__ import annotations

from scripts.render.common import Reports, f3, table

REPORT = "reports/generalise/report.json"
METHODS = ("ours", "iforest_raw", "ecod", "hbos")  # the default pipeline and the baselines run beside it
GOAL_RECALL, GOAL_FPR = 0.9, 0.01


def _winner(results: dict) -> str | None:
    scored = {m: results[m]["auprc"] for m in METHODS if m in results and results[m].get("auprc") is not None}
    return max(scored, key=scored.get) if scored else None


def _reaches(r: dict) -> bool | None:
    if not r.get("n_episodes"):
        return None
    return r["episode_recall"] >= GOAL_RECALL and r["fpr"] <= GOAL_FPR


def stats(report: dict) -> dict:
    """Counts over the splits: AUPRC wins of ours among METHODS, episode goal met, splits with attacks."""
    attacks = [s for s in report["splits"] if s["results"]["ours"].get("auprc") is not None]
    episodes = [s for s in report["splits"] if _reaches(s["results"]["ours"]) is not None]
    return {"splits": len(report["splits"]), "with_attacks": len(attacks),
            "ours_auprc_wins": sum(_winner(s["results"]) == "ours" for s in attacks),
            "with_episodes": len(episodes),
            "ours_goal": sum(bool(_reaches(s["results"]["ours"])) for s in episodes)}


def render_generalise(reports: Reports) -> list[str]:
    rep = reports.get(REPORT)
    rows = []
    for s in rep["splits"]:
        res = s["results"]
        o = res["ours"]
        ep = f"{o.get('n_detected', 0)}/{o.get('n_episodes', 0)}" if o.get("n_episodes") else "none"
        rows.append([s["split"], *(f3(res.get(m, {}).get("auprc")) for m in METHODS), ep, f"{o['fpr']:.4f}",
                     _winner(res) or "n/a"])
    st = stats(rep)
    return table(["split (held out)", "AUPRC ours", "IsolationForest", "ECOD", "HBOS",
                  "ours: episodes detected", "ours: benign FPR", "best AUPRC"], rows) + [
        "",
        f"Ours has the best AUPRC of these four on {st['ours_auprc_wins']} of the {st['with_attacks']} splits with "
        f"attacks, and "
        f"detects >= {GOAL_RECALL:.0%} of the attack episodes at benign FPR <= {GOAL_FPR:.0%} at its trained threshold "
        f"on {st['ours_goal']} of the {st['with_episodes']} splits with episodes.",
    ]

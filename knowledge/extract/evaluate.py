"""Precision/recall of extracted links against the hand-written gold set."""
from __future__ import annotations

from pathlib import Path

import yaml

from knowledge.extract import Link

GOLD = Path(__file__).resolve().parents[1] / "gold" / "technique_predicates.yaml"


def load_gold(path: str | Path = GOLD) -> dict[str, set[str]]:
    """Technique id (e.g. "T1046") -> set of predicate names."""
    data = yaml.safe_load(Path(path).read_text())
    return {str(t): set(ps or []) for t, ps in data["techniques"].items()}


def score(links: list[Link], gold: dict[str, set[str]], threshold: float = 0.5) -> dict:
    """Micro precision/recall/F1 over gold techniques for links with confidence >= threshold."""
    pred: dict[str, set[str]] = {t: set() for t in gold}
    for l in links:
        tid = l.subject.split(":", 1)[1]
        if tid in gold and l.status == "ok" and l.confidence >= threshold:
            pred[tid].add(l.predicate)
    tp = sum(len(pred[t] & gold[t]) for t in gold)
    fp = sum(len(pred[t] - gold[t]) for t in gold)
    fn = sum(len(gold[t] - pred[t]) for t in gold)
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": round(p, 3), "recall": round(r, 3), "f1": round(f, 3), "tp": tp, "fp": fp, "fn": fn,
            "techniques": len(gold), "threshold": threshold}

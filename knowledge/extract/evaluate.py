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


def main(argv: list[str] | None = None) -> int:
    """Precision/recall per backend (and their vote) on the gold techniques:
    ``python -m knowledge.extract.evaluate --backends lexicon,embedding [--llm-url URL]``."""
    import argparse
    import json

    from knowledge.extract import get_extractor, items_from_graph
    from knowledge.extract.vote import combine, propagate
    from knowledge.graph import build_graph

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--backends", default="lexicon")
    ap.add_argument("--data", default=None)
    ap.add_argument("--llm-url", default=None)
    ap.add_argument("--llm-model", default="local")
    ap.add_argument("--threshold", type=float, default=0.5)
    args = ap.parse_args(argv)
    g, _ = build_graph(args.data)
    gold = load_gold()
    # gold techniques plus the CAPEC patterns that map to them (so "with graph" includes CAPEC propagation)
    capec = {g.nodes[u]["source_id"] for t in gold if f"attack:{t}" in g
             for u, _, k in g.in_edges(f"attack:{t}", keys=True) if k == "maps_to"}
    items = items_from_graph(g, only=set(gold) | capec)
    res = {}
    for b in args.backends.split(","):
        kw = dict(url=args.llm_url, model=args.llm_model) if b == "llm" else {}
        res[b] = get_extractor(b, **kw).extract(items)
    out = {b: {"direct": score(ls, gold, args.threshold), "with_graph": score(propagate(g, ls), gold, args.threshold)}
           for b, ls in res.items()}
    if len(res) > 1:
        failed = {b: {l.subject for l in ls if l.status == "failed"} for b, ls in res.items()}
        v = combine(res, failed=failed)
        out["vote"] = {"direct": score(v, gold, args.threshold), "with_graph": score(propagate(g, v), gold, args.threshold)}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

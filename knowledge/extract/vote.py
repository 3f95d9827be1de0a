"""Combine extractor outputs by weighted vote, and propagate links along the graph.

Combined confidence of (subject, predicate) = sum_b w_b * conf_b / sum_b w_b over the backends that
ran (a backend that ran but did not propose the link counts as 0; a failed llm item does not count).
``low_confidence`` is set when the combined value is < 0.5 or fewer than half the backends agree.
"""
from __future__ import annotations

from collections import defaultdict

import networkx as nx

from knowledge.extract import Link

DEFAULT_WEIGHTS = {"lexicon": 1.0, "embedding": 0.7, "llm": 0.7}


def combine(results: dict[str, list[Link]], weights: dict[str, float] | None = None,
            failed: dict[str, set[str]] | None = None) -> list[Link]:
    """Vote over backends. ``failed[backend]`` = subjects that backend could not answer (excluded there)."""
    weights = weights or DEFAULT_WEIGHTS
    failed = failed or {}
    subjects_by_backend = {b: {l.subject for l in ls} for b, ls in results.items()}
    table: dict[tuple[str, str], dict[str, Link]] = defaultdict(dict)
    for b, links in results.items():
        for l in links:
            if l.status == "ok":
                table[(l.subject, l.predicate)][b] = l
    out = []
    for (subj, pred), by in sorted(table.items()):
        voters = [b for b in results if subj not in failed.get(b, set())]
        den = sum(weights.get(b, 1.0) for b in voters) or 1.0
        num = sum(weights.get(b, 1.0) * by[b].confidence for b in by if b in voters)
        conf = num / den
        agree = sum(1 for b in by if b in voters and by[b].confidence >= 0.5)
        best = max(by.values(), key=lambda l: l.confidence)
        out.append(Link(subj, pred, round(conf, 4), best.evidence, "vote", best.protocols, best.ports,
                        low_confidence=conf < 0.5 or agree * 2 < len(voters),
                        extra={"backends": ",".join(f"{b}={by[b].confidence:.2f}" for b in sorted(by))}))
    del subjects_by_backend
    return out


def propagate(g: nx.MultiDiGraph, links: list[Link], capec_discount: float = 0.8,
              child_discount: float = 0.8) -> list[Link]:
    """Graph reasoning: CAPEC pattern links flow to the ATT&CK techniques they map to, and sub-technique
    links flow to their parent technique, each discounted. An inherited link is added only where it is
    stronger than the subject's own (direct) link, if any; the direct link is kept beside it, and
    consumers take the maximum (a passing mention in a technique's text must not hide what the more
    detailed CAPEC pattern or sub-technique says)."""
    direct: dict[tuple[str, str], float] = {}
    for l in links:
        key = (l.subject, l.predicate)
        direct[key] = max(direct.get(key, 0.0), l.confidence)
    inherited: dict[tuple[str, str], Link] = {}

    def offer(subj: str, l: Link, factor: float, via: str) -> None:
        key = (subj, l.predicate)
        conf = round(l.confidence * factor, 4)
        if direct.get(key, 0.0) >= conf or (key in inherited and inherited[key].confidence >= conf):
            return
        inherited[key] = Link(subj, l.predicate, conf, f"via {via}: {l.evidence}"[:300], "graph", l.protocols,
                              l.ports, low_confidence=True, extra={"via": via, "from_backend": l.backend})

    for l in links:
        if l.subject not in g:
            continue
        for _, tgt, k in g.out_edges(l.subject, keys=True):
            if k == "maps_to":
                offer(tgt, l, capec_discount, g.nodes[l.subject]["source_id"])
            elif k == "subtechnique_of":
                offer(tgt, l, child_discount, g.nodes[l.subject]["source_id"])
    return links + sorted(inherited.values(), key=lambda l: (l.subject, l.predicate))

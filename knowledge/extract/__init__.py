"""Extraction: link ATT&CK techniques and CAPEC patterns to network-behaviour predicates.

Every backend implements :class:`Extractor` — ``extract(items) -> list[Link]`` — over the same
:class:`TextItem` inputs (the three in :mod:`knowledge.extract.base`), so they can be swapped and combined by
vote (:mod:`knowledge.extract.vote`).

Backends: ``lexicon`` (default, deterministic rules), ``embedding`` (optional extra, local
sentence-embedding model), ``llm`` (OpenAI-compatible chat-completions endpoint).
"""
from __future__ import annotations

from collections.abc import Iterable

import networkx as nx

from knowledge.extract.base import Extractor, Link, TextItem
from knowledge.graph import technique_sections

__all__ = ["NETWORK_COMPONENTS", "Extractor", "Link", "TextItem", "get_extractor", "is_network_relevant",
           "items_from_graph"]

# Data components that make a technique observable in network flows (ATT&CK v18 names).
NETWORK_COMPONENTS = {"Network Traffic Flow", "Network Traffic Content", "Network Connection Creation"}


def is_network_relevant(g: nx.MultiDiGraph, node: str) -> bool:
    """True when one of the technique's detection analytics observes a network data component."""
    for strat, _, k in g.in_edges(node, keys=True):
        if k != "detects":
            continue
        for _, an, k2 in g.out_edges(strat, keys=True):
            if k2 != "has_analytic":
                continue
            for _, comp, k3 in g.out_edges(an, keys=True):
                if k3 == "observes" and g.nodes[comp].get("name") in NETWORK_COMPONENTS:
                    return True
    return False


def items_from_graph(g: nx.MultiDiGraph, kinds: Iterable[str] = ("technique", "subtechnique", "capec"),
                     only: set[str] | None = None) -> list[TextItem]:
    """Text items for every node of the given types (optionally only the given source ids)."""
    import re

    out = []
    for n, d in sorted(g.nodes(data=True)):
        if d.get("type") not in kinds or (only is not None and d.get("source_id") not in only):
            continue
        text, det = technique_sections(g, n)
        if d.get("type") == "capec" and d.get("extended"):
            text += "\n" + d["extended"]
        # Drop citations, xhtml tags and markdown link targets (URLs are not the technique's words).
        clean = [re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", re.sub(r"\(Citation:[^)]*\)", "", re.sub(r"<[^>]+>", " ", t)))
                 for t in (text, det)]
        out.append(TextItem(n, d.get("source_id", ""), d.get("name", ""), clean[0], clean[1],
                            tuple(d.get("tactics", ())), d.get("type") != "capec" and is_network_relevant(g, n)))
    return out


def get_extractor(name: str, **kw) -> Extractor:
    """Backend by name: lexicon | embedding | llm."""
    if name == "lexicon":
        from knowledge.extract.lexicon import LexiconExtractor
        return LexiconExtractor(**kw)
    if name == "embedding":
        from knowledge.extract.embedding import EmbeddingExtractor
        return EmbeddingExtractor(**kw)
    if name == "llm":
        from knowledge.extract.llm import LLMExtractor
        return LLMExtractor(**kw)
    raise ValueError(f"unknown extractor {name!r}; choose lexicon, embedding, llm (or vote in the CLI)")

"""Build the knowledge graph + extraction links + artifact (what ``graphsentry kg build`` runs)."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import networkx as nx

from knowledge.artifact import sha256_file, write_artifact
from knowledge.extract import Link, get_extractor, items_from_graph
from knowledge.extract.evaluate import load_gold, score
from knowledge.extract.vote import combine, propagate
from knowledge.graph import DEFAULT_DATA, FILES, build_graph

log = logging.getLogger(__name__)


def add_links_to_graph(g: nx.MultiDiGraph, links: list[Link]) -> None:
    """Predicate nodes and ``exhibits`` edges (technique|capec -> predicate) with provenance."""
    from knowledge.predicates import PREDICATES

    for name, p in PREDICATES.items():
        g.add_node(f"predicate:{name}", type="predicate", name=name, source="graphsentry", source_id=name,
                   url="", description=p.description)
    for l in links:
        if l.status == "ok" and l.subject in g:
            g.add_edge(l.subject, f"predicate:{l.predicate}", key=f"exhibits:{l.backend}", type="exhibits",
                       confidence=l.confidence, evidence=l.evidence, backend=l.backend, low_confidence=l.low_confidence)


def run_extractors(g: nx.MultiDiGraph, extractor: str, llm_url: str | None = None, llm_model: str | None = None,
                   llm_only: set[str] | None = None, cache_dir: str | None = None) -> tuple[list[Link], dict]:
    """Run one backend (or ``vote``: every backend available) and return (propagated links, report)."""
    items = items_from_graph(g)
    report: dict = {"items": len(items),
                    "network_techniques": sorted(it.source_id for it in items if it.network)}
    names = ["lexicon", "embedding", "llm"] if extractor == "vote" else [extractor]
    results: dict[str, list[Link]] = {}
    failed: dict[str, set[str]] = {}
    for name in names:
        kw: dict = {}
        sub = items
        if name == "llm":
            if not llm_url:
                if extractor == "vote":
                    report["llm"] = "skipped: no --llm-url"
                    continue
                raise ValueError("the llm extractor needs --llm-url (an OpenAI-compatible endpoint)")
            kw = dict(url=llm_url, model=llm_model or "local", cache_dir=cache_dir)
            # An LLM answers one text in seconds: by default it reads network-relevant techniques only.
            if llm_only is not None:
                sub = [it for it in items if it.source_id in llm_only]
            else:
                sub = [it for it in items if it.network]
        try:
            ext = get_extractor(name, **kw)
        except ImportError as e:
            if extractor == "vote":
                report[name] = f"skipped: {e}"
                continue
            raise
        t0 = time.perf_counter()
        links = ext.extract(sub)
        # no timing in the report: it goes into manifest.json, whose bytes must not change between builds
        log.info("%s: %d links from %d items in %.1f s", name, len(links), len(sub), time.perf_counter() - t0)
        report[name] = {"items": len(sub), "links": len(links)}
        if hasattr(ext, "stats"):
            report[name].update(ext.stats)
        results[name] = links
        failed[name] = {l.subject for l in links if l.status == "failed"}
    if len(results) > 1:
        final = combine(results, failed=failed)
    else:
        final = next(iter(results.values()))
    gold = load_gold()
    report["gold"] = {b: score(propagate(g, ls), gold) for b, ls in results.items()}
    if len(results) > 1:
        report["gold"]["vote"] = score(propagate(g, final), gold)
    return propagate(g, final), report


def build(out: str | Path, extractor: str = "lexicon", data_dir: str | Path | None = None, *,
          llm_url: str | None = None, llm_model: str | None = None, include_graph: bool = True,
          cache_dir: str | None = None) -> dict:
    """Build and write the artifact; returns the manifest."""
    data = Path(data_dir) if data_dir else DEFAULT_DATA
    g, counts = build_graph(data)
    links, report = run_extractors(g, extractor, llm_url, llm_model, cache_dir=cache_dir)
    add_links_to_graph(g, links)
    inputs = {FILES[k]: sha256_file(data / FILES[k]) for k in FILES if (data / FILES[k]).exists()}
    return write_artifact(out, g, links, extractor=extractor, inputs=inputs, include_graph=include_graph,
                          extra_manifest={"load_counts": dict(sorted(counts.items())), "extraction": report})

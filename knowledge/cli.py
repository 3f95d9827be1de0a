"""Subcommands contributed by the `knowledge` package to the `graphsentry` program."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this package's subcommands to the `graphsentry` parser."""
    kg = subparsers.add_parser("kg", help="attack knowledge graph: build, stats, explain",
                               description="Attack knowledge graph (ATT&CK, CAPEC, CWE, D3FEND) and its links "
                                           "to network-behaviour predicates.")
    sub = kg.add_subparsers(dest="kg_command", metavar="KG_COMMAND")
    sub.required = True

    b = sub.add_parser("build", help="build the graph + extraction links and write a versioned artifact")
    b.add_argument("--data", default=None, help="folder with enterprise-attack.json, capec.json, cwec_*.xml, "
                                                 "d3fend-protege.ttl (default ../shared/data/knowledge)")
    b.add_argument("--extractor", choices=["lexicon", "embedding", "llm", "vote"], default="lexicon",
                   help="extraction backend (vote = every available backend combined)")
    b.add_argument("--llm-url", default=None, help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8765")
    b.add_argument("--llm-model", default=None, help="model name sent to the endpoint")
    b.add_argument("--cache-dir", default=None, help="LLM answer cache (default ~/.cache/graphsentry/llm)")
    b.add_argument("--no-graph", action="store_true", help="skip graph.json.gz (compact artifact, as bundled)")
    b.add_argument("--out", required=True, help="output directory")
    b.set_defaults(func=_build)

    s = sub.add_parser("stats", help="what an artifact holds (default: the bundled one)")
    s.add_argument("dir", nargs="?", default=None, help="artifact directory")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=_stats)

    e = sub.add_parser("explain", help="what the graph knows about a technique and which predicates it watches")
    e.add_argument("technique", help="ATT&CK id, e.g. T1046")
    e.add_argument("--artifact", default=None, help="artifact directory (default: bundled)")
    e.add_argument("--json", action="store_true", help="print JSON")
    e.set_defaults(func=_explain)


def _artifact_dir(d: str | None) -> Path:
    from knowledge.features import DEFAULT_ARTIFACT

    p = Path(d) if d else DEFAULT_ARTIFACT
    if not (p / "features.json").exists():
        raise FileNotFoundError(f"no knowledge artifact in {p} (build one with: graphsentry kg build --out DIR)")
    return p


def _build(args: argparse.Namespace) -> int:
    from knowledge.build import build

    m = build(args.out, args.extractor, args.data, llm_url=args.llm_url, llm_model=args.llm_model,
              include_graph=not args.no_graph, cache_dir=args.cache_dir)
    print(f"artifact {args.out}: hash {m['hash'][:16]}, {m['counts']['links']} links, "
          f"{m['counts']['feature_techniques']} feature techniques")
    for b, s in m["extraction"].get("gold", {}).items():
        print(f"  gold set ({s['techniques']} techniques) {b}: precision {s['precision']:.2f} recall {s['recall']:.2f}")
    return 0


def stats(d: str | None = None) -> dict:
    """Counts, network coverage and extraction quality of an artifact."""
    import pyarrow.compute as pc

    from knowledge.artifact import read_links

    p = _artifact_dir(d)
    man = json.loads((p / "manifest.json").read_text())
    spec = json.loads((p / "features.json").read_text())
    links = read_links(p)
    ok = links.filter(pc.equal(links.column("status"), "ok"))
    strong = ok.filter(pc.greater_equal(ok.column("confidence"), 0.5))
    tech_subjects = {s for s in strong.column("subject").to_pylist() if s.startswith("attack:")}
    net = man.get("extraction", {}).get("network_techniques", [])
    out = {
        "artifact": str(p), "hash": man["hash"], "extractor": man["extractor"], "version": man["artifact_version"],
        "nodes": man["counts"]["nodes"], "edges": man["counts"]["edges"], "links": links.num_rows,
        "links_by_backend": {k: int(v) for k, v in zip(*[c.to_pylist() for c in
                                                         pc.value_counts(links.column("backend")).flatten()])},
        "techniques_with_link>=0.5": len(tech_subjects),
        "feature_techniques": len(spec["techniques"]), "predicates": len(spec["predicates"]),
        "gold": man.get("extraction", {}).get("gold", {}),
    }
    if net:
        out["network_relevant_techniques"] = len(net)
        out["network_relevant_linked"] = sum(1 for t in net if f"attack:{t}" in tech_subjects)
    return out


def _stats(args: argparse.Namespace) -> int:
    s = stats(args.dir)
    if args.json:
        print(json.dumps(s, indent=1, sort_keys=True))
        return 0
    print(f"artifact {s['artifact']}  hash {s['hash'][:16]}  extractor {s['extractor']}")
    print("nodes: " + ", ".join(f"{k} {v}" for k, v in s["nodes"].items()))
    print("edges: " + ", ".join(f"{k} {v}" for k, v in s["edges"].items()))
    print(f"links: {s['links']} ({', '.join(f'{k} {v}' for k, v in s['links_by_backend'].items())})")
    if "network_relevant_techniques" in s:
        print(f"network-relevant techniques (ATT&CK detection observes network traffic): "
              f"{s['network_relevant_techniques']}, linked to >= 1 predicate (conf >= 0.5): {s['network_relevant_linked']}")
    print(f"techniques with a link >= 0.5: {s['techniques_with_link>=0.5']}; feature columns: "
          f"{s['predicates']} predicates + {s['feature_techniques']} techniques + 14 tactics")
    for b, g in s["gold"].items():
        print(f"gold set {b}: precision {g['precision']:.3f} recall {g['recall']:.3f} f1 {g['f1']:.3f} "
              f"(tp {g['tp']} fp {g['fp']} fn {g['fn']}, {g['techniques']} techniques, conf >= {g['threshold']})")
    return 0


def explain_technique(tid: str, d: str | None = None) -> dict:
    """What the artifact (and graph, when present) knows about one technique."""
    import pyarrow.compute as pc

    from knowledge.artifact import read_graph, read_links
    from knowledge.predicates import PREDICATES

    p = _artifact_dir(d)
    spec = json.loads((p / "features.json").read_text())
    info = next((t for t in spec["techniques"] if t["id"] == tid), None)
    links = read_links(p)
    mine = links.filter(pc.equal(links.column("source_id"), tid)).to_pylist()
    g = read_graph(p)
    out: dict = {"id": tid, "in_feature_block": info is not None}
    if g is not None and f"attack:{tid}" in g:
        node = f"attack:{tid}"
        nd = g.nodes[node]
        out.update(name=nd["name"], url=nd["url"], tactics=nd.get("tactics", []), description=nd.get("description", "")[:600])
        out["groups_using"] = sum(1 for u, _, k in g.in_edges(node, keys=True) if k == "uses" and g.nodes[u]["type"] == "group")
        out["software_using"] = sum(1 for u, _, k in g.in_edges(node, keys=True) if k == "uses" and g.nodes[u]["type"] == "software")
        out["capec"] = sorted(g.nodes[u]["source_id"] for u, _, k in g.in_edges(node, keys=True) if k == "maps_to")
        out["mitigations"] = sorted(f"{g.nodes[u]['source_id']} {g.nodes[u]['name']}" for u, _, k in g.in_edges(node, keys=True) if k == "mitigates")
        out["d3fend"] = sorted(f"{g.nodes[u]['source_id']} {g.nodes[u]['name']}" for u, _, k in g.in_edges(node, keys=True) if k == "counters")[:15]
    elif info is not None:
        out.update(name=info["name"], url=info["url"], tactics=info["tactics"], capec=info["capec"],
                   mitigations=[f"{m['id']} {m['name']}" for m in info["mitigations"]],
                   d3fend=[f"{x['id']} {x['name']}" for x in info["d3fend"]])
    elif not mine:
        raise ValueError(f"{tid} is not in this artifact (no links; build with graph for full details)")
    out["predicates"] = sorted(({"predicate": r["predicate"], "confidence": r["confidence"], "backend": r["backend"],
                                 "low_confidence": r["low_confidence"], "evidence": r["evidence"],
                                 "definition": PREDICATES[r["predicate"]].description if r["predicate"] in PREDICATES else ""}
                                for r in mine if r["status"] == "ok"), key=lambda r: -r["confidence"])
    return out


def _explain(args: argparse.Namespace) -> int:
    e = explain_technique(args.technique.upper(), args.artifact)
    if args.json:
        print(json.dumps(e, indent=1))
        return 0
    print(f"{e['id']} {e.get('name', '')}  {e.get('url', '')}")
    if e.get("tactics"):
        print("tactics: " + ", ".join(e["tactics"]))
    if e.get("description"):
        print(e["description"].strip().split("\n")[0][:400])
    for k in ("groups_using", "software_using"):
        if k in e:
            print(f"{k.replace('_', ' ')}: {e[k]}")
    for k in ("capec", "mitigations", "d3fend"):
        if e.get(k):
            print(f"{k}: " + "; ".join(e[k][:10]))
    print("watches predicates:" if e["predicates"] else "no predicate links")
    for r in e["predicates"]:
        flag = " (low confidence)" if r["low_confidence"] else ""
        print(f"  {r['predicate']:<28} {r['confidence']:.2f} [{r['backend']}]{flag}  \"{r['evidence'][:110]}\"")
    sys.stdout.flush()
    return 0

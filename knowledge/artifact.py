"""Versioned knowledge artifact: what ``graphsentry kg build`` writes and the featurizer loads.

A directory with:
  ``manifest.json``   version, content hash, input file hashes, extractor, counts (no timestamps,
                      so the same inputs give the same bytes)
  ``features.json``   what the featurizer needs: predicate vocabulary, techniques with names, URLs,
                      tactics, parent, D3FEND countermeasures, mitigations, CAPEC ids, and the
                      technique -> predicate weights
  ``links.parquet``   every extracted link with provenance (subject, predicate, confidence,
                      evidence, backend, protocols, ports, status, low_confidence, extra)
  ``graph.json.gz``   (optional) the whole typed graph as networkx node-link JSON, gzip with mtime 0

The content hash is sha256 over the canonical JSON of features.json, of the link rows and of
the graph (when written); it does not depend on Parquet/gzip encoder details.
"""
from __future__ import annotations

import gzip
import hashlib
import json
from collections import Counter
from pathlib import Path

import networkx as nx
import pyarrow as pa
import pyarrow.parquet as pq

from knowledge.extract import Link
from knowledge.predicates import PREDICATE_NAMES, PREDICATES, VOCAB_VERSION

ARTIFACT_VERSION = "1"
# A link weaker than this does not enter the feature weights (it stays in links.parquet).
MIN_FEATURE_LINK = 0.4
# A technique gets a feature column when one of its links to a behaviour (non-context) predicate
# reaches this confidence; keeps the block narrow (~190 techniques: the per-window cost grows with
# the width) and limited to techniques the text supports clearly.
MIN_TECHNIQUE_LINK = 0.6
# Context predicates (protocol/direction facts true of much benign traffic) count 0.3x in technique scores.
CONTEXT_FACTOR = 0.3
# Counted as context in technique scores besides the predicates tagged "context" in knowledge/predicates.py
# (lateral_admin and inbound_remote_service moved there as tags; see the comment at their registration).
EXTRA_CONTEXT: tuple[str, ...] = ()
LINK_SCHEMA = pa.schema([
    ("subject", pa.string()), ("source_id", pa.string()), ("predicate", pa.string()),
    ("confidence", pa.float64()), ("evidence", pa.string()), ("backend", pa.string()),
    ("protocols", pa.list_(pa.string())), ("ports", pa.list_(pa.int32())), ("status", pa.string()),
    ("low_confidence", pa.bool_()), ("extra", pa.string()),
])


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def link_rows(links: list[Link]) -> list[dict]:
    rows = []
    for l in sorted(links, key=lambda l: (l.subject, l.predicate, l.backend)):
        r = l.row()
        r["source_id"] = l.subject.split(":", 1)[1]
        r["extra"] = json.dumps(r["extra"], sort_keys=True)
        rows.append({k: r[k] for k in LINK_SCHEMA.names})
    return rows


def context_predicates() -> list[str]:
    """Predicates that count ``CONTEXT_FACTOR`` x in technique scores, in vocabulary order."""
    return [p for p in PREDICATE_NAMES if "context" in PREDICATES[p].tags or p in EXTRA_CONTEXT]


def feature_spec(g: nx.MultiDiGraph, links: list[Link]) -> dict:
    """The compact featurizer spec: techniques with at least one link >= MIN_FEATURE_LINK."""
    weights: dict[str, dict[str, float]] = {}
    for l in links:
        if l.status != "ok" or l.confidence < MIN_FEATURE_LINK or not l.subject.startswith("attack:"):
            continue
        w = weights.setdefault(l.subject.split(":", 1)[1], {})
        w[l.predicate] = max(w.get(l.predicate, 0.0), round(float(l.confidence), 4))
    ctx = set(context_predicates())
    weights = {t: w for t, w in weights.items()
               if any(c >= MIN_TECHNIQUE_LINK and p not in ctx for p, c in w.items())}
    tactics = sorted((d["source_id"], d["name"], d.get("shortname", ""), d["url"])
                     for n, d in g.nodes(data=True) if d.get("type") == "tactic")
    short_to_id = {s: i for i, _, s, _ in tactics}
    techs = []
    for tid in sorted(weights):
        node = f"attack:{tid}"
        d = g.nodes[node]
        parent = next((g.nodes[v]["source_id"] for _, v, k in g.out_edges(node, keys=True) if k == "subtechnique_of"), None)
        counters = sorted(((g.nodes[u]["source_id"], g.nodes[u]["name"], g.nodes[u]["url"], bool(e.get("exact")), e.get("via", ""))
                           for u, _, k, e in g.in_edges(node, keys=True, data=True) if k == "counters"),
                          key=lambda x: (not x[3], x[0]))
        mitig = sorted((g.nodes[u]["source_id"], g.nodes[u]["name"]) for u, _, k in g.in_edges(node, keys=True)
                       if k == "mitigates")
        capec = sorted(g.nodes[u]["source_id"] for u, _, k in g.in_edges(node, keys=True) if k == "maps_to")
        techs.append({
            "id": tid, "name": d["name"], "url": d["url"], "parent": parent,
            "tactics": [short_to_id[t] for t in d.get("tactics", []) if t in short_to_id],
            "d3fend": [{"id": c[0], "name": c[1], "url": c[2], "exact": c[3], "via": c[4]} for c in counters[:8]],
            "d3fend_total": len(counters),
            "mitigations": [{"id": m[0], "name": m[1]} for m in mitig[:8]],
            "capec": capec[:10],
        })
    return {
        "artifact_version": ARTIFACT_VERSION, "vocab_version": VOCAB_VERSION,
        "predicates": list(PREDICATE_NAMES),
        "context_predicates": context_predicates(),
        "context_factor": CONTEXT_FACTOR, "min_feature_link": MIN_FEATURE_LINK,
        "min_technique_link": MIN_TECHNIQUE_LINK,
        "tactics": [{"id": i, "name": n, "shortname": s, "url": u} for i, n, s, u in tactics],
        "techniques": techs, "weights": weights,
    }


def graph_nodelink(g: nx.MultiDiGraph) -> dict:
    data = nx.node_link_data(g, edges="links")
    data["nodes"] = sorted(data["nodes"], key=lambda n: n["id"])
    data["links"] = sorted(data["links"], key=lambda e: (e["source"], e["target"], e["key"]))
    return data


def write_artifact(out: str | Path, g: nx.MultiDiGraph, links: list[Link], *, extractor: str,
                   inputs: dict[str, str], include_graph: bool = True, extra_manifest: dict | None = None) -> dict:
    """Write the artifact directory; returns the manifest (with ``hash``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec = feature_spec(g, links)
    rows = link_rows(links)
    h = hashlib.sha256()
    h.update(canonical(spec))
    h.update(canonical(rows))
    (out / "features.json").write_text(json.dumps(spec, indent=1, sort_keys=True, ensure_ascii=False))
    pq.write_table(pa.Table.from_pylist(rows, schema=LINK_SCHEMA), out / "links.parquet", compression="zstd")
    files = ["features.json", "links.parquet"]
    if include_graph:
        nl = canonical(graph_nodelink(g))
        h.update(nl)
        with open(out / "graph.json.gz", "wb") as raw:
            with gzip.GzipFile(filename="graph.json", mode="wb", fileobj=raw, mtime=0) as f:
                f.write(nl)
        files.append("graph.json.gz")
    elif (out / "graph.json.gz").exists():
        (out / "graph.json.gz").unlink()
    types = Counter(d.get("type") for _, d in g.nodes(data=True))
    etypes = Counter(k for *_, k in g.edges(keys=True))
    manifest = {
        "artifact_version": ARTIFACT_VERSION, "vocab_version": VOCAB_VERSION, "extractor": extractor,
        "hash": h.hexdigest(), "inputs": inputs, "files": files,
        "counts": {"nodes": dict(sorted(types.items(), key=lambda kv: str(kv[0]))), "edges": dict(sorted(etypes.items())),
                   "links": len(rows), "feature_techniques": len(spec["techniques"])},
    }
    manifest.update(extra_manifest or {})
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def read_links(path: str | Path) -> pa.Table:
    return pq.read_table(Path(path) / "links.parquet")


def read_graph(path: str | Path) -> nx.MultiDiGraph | None:
    p = Path(path) / "graph.json.gz"
    if not p.exists():
        return None
    with gzip.open(p, "rb") as f:
        return nx.node_link_graph(json.loads(f.read()), directed=True, multigraph=True, edges="links")

"""Versioned artifact: the same inputs give the same content hash and bytes; a change changes it."""
from __future__ import annotations

import json

import pytest

from knowledge.artifact import read_graph, read_links, write_artifact
from knowledge.extract import items_from_graph
from knowledge.extract.lexicon import LexiconExtractor
from knowledge.extract.vote import propagate
from knowledge.features import KnowledgeFeaturizer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small(kgraph):
    g, _ = kgraph
    keep = {"T1046", "T1595", "T1595.001", "T1498", "T1498.001", "T1110", "T1071"}
    items = items_from_graph(g, only=keep)
    links = propagate(g, LexiconExtractor().extract(items))
    nodes = {f"attack:{t}" for t in keep}
    nodes |= {v for n in list(nodes) for _, v in g.out_edges(n)} | {u for n in list(nodes) for u, _ in g.in_edges(n)}
    return g, g.subgraph(nodes).copy(), links


def test_artifact_hash_is_reproducible(small, tmp_path):
    g, sub, links = small
    m1 = write_artifact(tmp_path / "a", sub, links, extractor="lexicon", inputs={"x": "1"})
    m2 = write_artifact(tmp_path / "b", sub, list(reversed(links)), extractor="lexicon", inputs={"x": "1"})
    assert m1["hash"] == m2["hash"]
    for f in ("features.json", "manifest.json", "graph.json.gz", "links.parquet"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    links[0].confidence = round(links[0].confidence * 0.5, 4)
    m3 = write_artifact(tmp_path / "c", sub, links, extractor="lexicon", inputs={"x": "1"})
    assert m3["hash"] != m1["hash"]


def test_artifact_round_trip(small, tmp_path):
    g, sub, links = small
    write_artifact(tmp_path / "a", sub, links, extractor="lexicon", inputs={})
    t = read_links(tmp_path / "a")
    assert t.num_rows == len(links) and {"subject", "predicate", "confidence", "evidence", "backend"} <= set(t.column_names)
    g2 = read_graph(tmp_path / "a")
    assert g2.number_of_nodes() == sub.number_of_nodes() and g2.number_of_edges() == sub.number_of_edges()
    assert g2.nodes["attack:T1046"]["url"].endswith("T1046")
    kf = KnowledgeFeaturizer.load(tmp_path / "a")
    assert kf.hash == json.loads((tmp_path / "a" / "manifest.json").read_text())["hash"]
    assert "T1046" in kf.tech_ids


def test_bundled_artifact_is_small_and_consistent():
    from knowledge.features import DEFAULT_ARTIFACT

    size = sum(p.stat().st_size for p in DEFAULT_ARTIFACT.iterdir())
    assert size < 2 * 1024 * 1024
    man = json.loads((DEFAULT_ARTIFACT / "manifest.json").read_text())
    assert man["extractor"] == "lexicon" and len(man["hash"]) == 64


def test_graph_does_not_depend_on_hash_seed(kdata):
    """Two processes with different PYTHONHASHSEED build the same D3FEND countermeasure edges."""
    import os
    import subprocess
    import sys

    code = ("import hashlib,sys; from collections import Counter; from pathlib import Path; import networkx as nx;"
            "from knowledge.graph import add_attack, add_d3fend; g=nx.MultiDiGraph(); st=Counter(); d=Path(sys.argv[1]);"
            "add_attack(g, d/'enterprise-attack.json', st); add_d3fend(g, d/'d3fend-protege.ttl', st);"
            "e=sorted((u,v,str(x.get('via')),str(x.get('exact'))) for u,v,k,x in g.edges(keys=True,data=True) if k=='counters');"
            "print(hashlib.sha256(repr(e).encode()).hexdigest())")
    outs = set()
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        r = subprocess.run([sys.executable, "-c", code, str(kdata)], capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        outs.add(r.stdout.strip())
    assert len(outs) == 1


def test_port_and_direction_facts_are_context_in_the_bundled_artifact():
    from knowledge.artifact import EXTRA_CONTEXT
    from knowledge.features import DEFAULT_ARTIFACT

    spec = json.loads((DEFAULT_ARTIFACT / "features.json").read_text())
    assert set(EXTRA_CONTEXT) <= set(spec["context_predicates"])
    assert {"lateral_admin", "inbound_remote_service"} <= set(spec["context_predicates"])
    ctx = set(spec["context_predicates"])
    for tid, w in spec["weights"].items():  # every column has a behaviour link >= the floor
        assert any(c >= spec["min_technique_link"] and p not in ctx for p, c in w.items()), tid


def _windows():
    from tests.knowledge.flowkit import T0, many, table

    # SSH-Patator-like: one private address guesses passwords on another's SSH (short sessions with payload)
    ssh = many(30, lambda i: dict(ts=T0 + 2 * i, src_ip="172.16.0.1", src_port=50000 + i, dst_ip="192.168.10.50",
                                  dst_port=22, duration=2.0, src_bytes=1200, dst_bytes=1500, src_pkts=12, dst_pkts=11))
    # vertical scan: SYNs to 25 ports of one host, refused
    scan = many(25, lambda i: dict(ts=T0 + 0.1 * i, src_ip="172.16.0.1", dst_ip="192.168.10.50", dst_port=1 + i,
                                   conn_state="REJ", history="Sr", src_bytes=0, dst_bytes=0, src_pkts=1, dst_pkts=1,
                                   rst_count=1, duration=0.001))
    return {"ssh_brute_force": table(ssh), "vertical_scan": table(scan)}


@pytest.mark.parametrize("case, family, not_family", [
    ("ssh_brute_force", ("T1110",), ("T1021",)),
    ("vertical_scan", ("T1046", "T1595"), ("T1205",)),
])
def test_bundled_artifact_names_the_technique_the_text_describes(case, family, not_family):
    kf = KnowledgeFeaturizer.default()
    top = kf.transform(_windows()[case]).top_technique()
    assert all(t is not None and t.startswith(family) for t in top), top
    assert not any(t.startswith(not_family) for t in top if t)


def test_extraction_report_has_no_run_dependent_values(small):
    """The extraction report goes into manifest.json, whose bytes must not change between builds."""
    from knowledge.build import run_extractors

    _, sub, _ = small
    (l1, r1), (l2, r2) = run_extractors(sub, "lexicon"), run_extractors(sub, "lexicon")
    assert json.dumps(r1, sort_keys=True) == json.dumps(r2, sort_keys=True)
    assert [l.row() for l in l1] == [l.row() for l in l2]
    assert "seconds" not in json.dumps(r1)

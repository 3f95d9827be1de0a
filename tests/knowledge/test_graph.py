"""The typed graph: node/edge counts match the sources, counted here independently from the raw files."""
from __future__ import annotations

import json
import re

import pytest

from knowledge.turtle import parse, tokenize

pytestmark = pytest.mark.slow


def _active(o):
    return not o.get("revoked", False) and not o.get("x_mitre_deprecated", False)


@pytest.fixture(scope="module")
def attack_objs(kdata):
    return json.loads((kdata / "enterprise-attack.json").read_text())["objects"]


def _count(g, **attrs):
    return sum(1 for _, d in g.nodes(data=True) if all(d.get(k) == v for k, v in attrs.items()))


def _edges(g, key):
    return sum(1 for *_, k in g.edges(keys=True) if k == key)


def test_attack_nodes_match_bundle(kgraph, attack_objs):
    g, stats = kgraph
    tech = [o for o in attack_objs if o["type"] == "attack-pattern" and _active(o)]
    assert _count(g, type="technique") + _count(g, type="subtechnique") == len(tech)
    assert _count(g, type="subtechnique") == sum(1 for o in tech if o.get("x_mitre_is_subtechnique"))
    assert _count(g, type="tactic") == sum(1 for o in attack_objs if o["type"] == "x-mitre-tactic" and _active(o))
    assert _count(g, type="group") == sum(1 for o in attack_objs if o["type"] == "intrusion-set" and _active(o))
    assert _count(g, type="software") == sum(1 for o in attack_objs if o["type"] in ("malware", "tool") and _active(o))
    assert _count(g, type="mitigation") == sum(1 for o in attack_objs if o["type"] == "course-of-action" and _active(o))
    assert _count(g, type="analytic") == sum(1 for o in attack_objs if o["type"] == "x-mitre-analytic" and _active(o))
    # revoked techniques are skipped, and reported as skipped
    revoked = sum(1 for o in attack_objs if o["type"] == "attack-pattern" and not _active(o))
    assert stats["skipped_technique"] + stats["skipped_subtechnique"] == revoked > 0
    n = g.nodes["attack:T1046"]
    assert n["name"] == "Network Service Discovery" and n["url"].endswith("/T1046") and n["source_id"] == "T1046"


@pytest.mark.parametrize("rel", ["uses", "mitigates", "detects", "subtechnique-of"])
def test_attack_relationships_match_bundle(kgraph, attack_objs, rel):
    g, _ = kgraph
    active = {o["id"] for o in attack_objs if o["type"] != "relationship" and _active(o)}
    expected = sum(1 for o in attack_objs if o["type"] == "relationship" and o["relationship_type"] == rel
                   and _active(o) and o["source_ref"] in active and o["target_ref"] in active)
    assert expected > 0
    assert _edges(g, rel.replace("-", "_")) == expected


def test_capec_and_cwe_counts(kgraph, kdata):
    g, _ = kgraph
    capec = json.loads((kdata / "capec.json").read_text())["objects"]
    pats = [o for o in capec if o["type"] == "attack-pattern" and not o.get("revoked")
            and o.get("x_capec_status") not in ("Deprecated", "Obsolete")]
    assert _count(g, type="capec") == len(pats)
    xml = (kdata / "cwec_v4.14.xml").read_text()
    heads = re.findall(r"<Weakness ID=\"\d+\"[^>]*>", xml)
    live = [h for h in heads if 'Status="Deprecated"' not in h and 'Status="Obsolete"' not in h]
    assert _count(g, type="cwe") == len(live)
    # CAPEC -> ATT&CK links: every ATTACK reference whose technique is active
    tech_ids = {d["source_id"] for _, d in g.nodes(data=True) if d.get("type") in ("technique", "subtechnique")}
    refs = {(o["id"], r["external_id"] if r["external_id"].startswith("T") else "T" + r["external_id"])
            for o in pats for r in o.get("external_references", []) if r.get("source_name") == "ATTACK"}
    assert _edges(g, "maps_to") == sum(1 for _, t in refs if t in tech_ids)
    assert g.has_edge("capec:CAPEC-112", "cwe:CWE-330", "exploits") or _edges(g, "exploits") > 500


def test_d3fend_nodes_and_counters(kgraph, kdata):
    g, _ = kgraph
    text = (kdata / "d3fend-protege.ttl").read_text()
    blocks = text.split("\n\n")
    ids = {m.group(1) for b in blocks if "owl:deprecated true" not in b
           for m in re.finditer(r':d3fend-id "([^"]+)"', b)}
    assert _count(g, type="d3fend") == len(ids) > 100
    # Network techniques get network-traffic countermeasures through shared artifacts
    c = [u for u, _, k in g.in_edges("attack:T1048", keys=True) if k == "counters"]
    assert c and all(g.nodes[u]["type"] == "d3fend" for u in c)
    for _, d in g.nodes(data=True):
        assert d.get("source_id") and "url" in d and d.get("type")


def test_turtle_parser_small():
    src = '@prefix ex: <http://x#> .\nex:a a ex:C ; ex:p "s \\"q\\"."@en , """long\n. text""" ;\n ex:r [ ex:f ex:g ] .\nex:b ex:q ex:c.'
    assert tokenize("ex:b ex:q ex:c.")[-1] == "."
    d = parse(src)
    assert ("rdf:type", "ex:C") in d["ex:a"]
    assert d["ex:a"][3] == ("ex:r", [("ex:f", "ex:g")])
    assert d["ex:b"] == [("ex:q", "ex:c")]

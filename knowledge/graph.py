"""Typed attack knowledge graph from ATT&CK Enterprise, CAPEC, CWE and D3FEND.

Node ids are ``<source>:<source id>`` (``attack:T1046``, ``attack:TA0007``, ``capec:CAPEC-169``,
``cwe:CWE-307``, ``d3fend:D3-NTA``, ``predicate:horizontal_scan``). Every node has
``type``, ``name``, ``source``, ``source_id``, ``url`` and (when the source has one) ``description``.

Node types: tactic, technique, subtechnique, group, software, campaign, mitigation,
detection_strategy, analytic, data_component (ATT&CK); capec (CAPEC); cwe (CWE);
d3fend (D3FEND defensive technique); predicate (our network behaviours).

Edge types (the MultiDiGraph key), direction as written:
  subtechnique -[subtechnique_of]-> technique; technique -[in_tactic]-> tactic;
  group|software|campaign -[uses]-> technique|software; mitigation -[mitigates]-> technique;
  detection_strategy -[detects]-> technique; detection_strategy -[has_analytic]-> analytic;
  analytic -[observes]-> data_component; campaign -[attributed_to]-> group;
  capec -[maps_to]-> technique; capec -[exploits]-> cwe; capec -[child_of]-> capec;
  cwe -[enables]-> capec (CWE Related_Attack_Patterns); cwe -[child_of]-> cwe;
  d3fend -[counters]-> technique (attr ``via``: the digital artifact both touch);
  technique|capec -[exhibits]-> predicate (added by extraction, attrs confidence/evidence/backend).

Skipped: ATT&CK objects with ``revoked`` or ``x_mitre_deprecated`` true, relationships touching
them and ``revoked-by`` relationships; CAPEC patterns with status Deprecated/Obsolete; CWE entries
with status Deprecated/Obsolete; D3FEND classes marked ``owl:deprecated``. CAPEC course-of-action
objects are not loaded (ATT&CK mitigations and D3FEND cover defences).
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import networkx as nx

from knowledge.turtle import literal
from knowledge.turtle import parse as parse_turtle

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "knowledge"
FILES = {"attack": "enterprise-attack.json", "capec": "capec.json", "cwe": "cwec_v4.14.xml",
         "d3fend": "d3fend-protege.ttl"}

_ATTACK_TYPES = {"x-mitre-tactic": "tactic", "intrusion-set": "group", "malware": "software", "tool": "software",
                 "campaign": "campaign", "course-of-action": "mitigation",
                 "x-mitre-detection-strategy": "detection_strategy", "x-mitre-analytic": "analytic",
                 "x-mitre-data-component": "data_component"}


def _ext(obj: dict, source: str = "mitre-attack") -> tuple[str | None, str | None]:
    for r in obj.get("external_references", []):
        if r.get("source_name") == source and r.get("external_id"):
            return r["external_id"], r.get("url")
    return None, None


def _active(obj: dict) -> bool:
    return not obj.get("revoked", False) and not obj.get("x_mitre_deprecated", False)


def add_attack(g: nx.MultiDiGraph, path: Path, stats: Counter) -> dict[str, str]:
    """Add ATT&CK Enterprise; returns STIX id -> node id for the loaded objects."""
    objs = json.loads(Path(path).read_text())["objects"]
    sid: dict[str, str] = {}
    tactic_by_short: dict[str, str] = {}
    for o in objs:
        t = o["type"]
        if t == "attack-pattern":
            kind = "subtechnique" if o.get("x_mitre_is_subtechnique") else "technique"
        elif t in _ATTACK_TYPES:
            kind = _ATTACK_TYPES[t]
        else:
            continue
        if not _active(o):
            stats[f"skipped_{kind}"] += 1
            continue
        ext, url = _ext(o)
        if ext is None:
            stats[f"skipped_{kind}_no_id"] += 1
            continue
        node = f"attack:{ext}"
        attrs = dict(type=kind, name=o.get("name", ext), source="attack", source_id=ext, url=url or "",
                     description=o.get("description", ""), stix_id=o["id"])
        if t == "attack-pattern":
            attrs["platforms"] = list(o.get("x_mitre_platforms", []))
            attrs["tactics"] = [p["phase_name"] for p in o.get("kill_chain_phases", [])
                                if p.get("kill_chain_name") == "mitre-attack"]
        if t == "x-mitre-tactic":
            attrs["shortname"] = o.get("x_mitre_shortname", "")
            tactic_by_short[attrs["shortname"]] = node
        g.add_node(node, **attrs)
        sid[o["id"]] = node
        stats[kind] += 1
    for o in objs:  # structural links held inside objects
        node = sid.get(o["id"])
        if node is None:
            continue
        if o["type"] == "attack-pattern":
            for tac in g.nodes[node]["tactics"]:
                if tac in tactic_by_short:
                    g.add_edge(node, tactic_by_short[tac], key="in_tactic", type="in_tactic")
                    stats["edge_in_tactic"] += 1
        elif o["type"] == "x-mitre-detection-strategy":
            for ref in o.get("x_mitre_analytic_refs", []):
                if ref in sid:
                    g.add_edge(node, sid[ref], key="has_analytic", type="has_analytic")
                    stats["edge_has_analytic"] += 1
        elif o["type"] == "x-mitre-analytic":
            for ls in o.get("x_mitre_log_source_references", []):
                ref = ls.get("x_mitre_data_component_ref")
                if ref in sid and not g.has_edge(node, sid[ref], "observes"):
                    g.add_edge(node, sid[ref], key="observes", type="observes")
                    stats["edge_observes"] += 1
    for o in objs:
        if o["type"] != "relationship" or not _active(o):
            continue
        rel = o["relationship_type"]
        if rel == "revoked-by":
            continue
        a, b = sid.get(o["source_ref"]), sid.get(o["target_ref"])
        if a is None or b is None:
            stats[f"dropped_{rel}"] += 1
            continue
        key = rel.replace("-", "_")
        g.add_edge(a, b, key=key, type=key, description=o.get("description", "")[:300])
        stats[f"edge_{key}"] += 1
    return sid


def add_capec(g: nx.MultiDiGraph, path: Path, stats: Counter) -> None:
    """Add CAPEC attack patterns with their ATT&CK and CWE links."""
    objs = json.loads(Path(path).read_text())["objects"]
    sid: dict[str, str] = {}
    pending: list[tuple[str, dict]] = []
    for o in objs:
        if o["type"] != "attack-pattern":
            continue
        if o.get("revoked") or o.get("x_capec_status") in ("Deprecated", "Obsolete"):
            stats["skipped_capec"] += 1
            continue
        ext, url = _ext(o, "capec")
        node = f"capec:{ext}"
        g.add_node(node, type="capec", name=o["name"], source="capec", source_id=ext, url=url or "",
                   description=o.get("description", ""), abstraction=o.get("x_capec_abstraction", ""),
                   extended=" ".join(o.get("x_capec_extended_description", "").split())[:2000],
                   domains=list(o.get("x_capec_domains", [])))
        sid[o["id"]] = node
        stats["capec"] += 1
        pending.append((node, o))
    for node, o in pending:
        for r in o.get("external_references", []):
            src, ext = r.get("source_name"), r.get("external_id", "")
            if src == "ATTACK":
                tid = ext if ext.startswith("T") else f"T{ext}"
                tgt = f"attack:{tid}"
                if tgt in g:
                    g.add_edge(node, tgt, key="maps_to", type="maps_to")
                    stats["edge_maps_to"] += 1
                else:
                    stats["dropped_maps_to"] += 1
            elif src == "cwe":
                tgt = f"cwe:{ext}"
                g.add_node(tgt)  # attributes filled by add_cwe; unknown ones are removed there
                g.add_edge(node, tgt, key="exploits", type="exploits")
        for ref in o.get("x_capec_child_of_refs", []):
            if ref in sid:
                g.add_edge(node, sid[ref], key="child_of", type="child_of")
                stats["edge_capec_child_of"] += 1


def add_cwe(g: nx.MultiDiGraph, path: Path, stats: Counter) -> None:
    """Add CWE weaknesses (stdlib XML parser) with child-of and CAPEC links."""
    ns = {"c": "http://cwe.mitre.org/cwe-7"}
    root = ET.parse(path).getroot()
    keep: set[str] = set()
    rels: list[tuple[str, str, str]] = []
    for w in root.iterfind("c:Weaknesses/c:Weakness", ns):
        wid = f"CWE-{w.get('ID')}"
        if w.get("Status") in ("Deprecated", "Obsolete"):
            stats["skipped_cwe"] += 1
            continue
        node = f"cwe:{wid}"
        desc = w.findtext("c:Description", default="", namespaces=ns)
        g.add_node(node, type="cwe", name=w.get("Name"), source="cwe", source_id=wid,
                   url=f"https://cwe.mitre.org/data/definitions/{w.get('ID')}.html", description=desc.strip())
        keep.add(node)
        stats["cwe"] += 1
        for rw in w.iterfind("c:Related_Weaknesses/c:Related_Weakness", ns):
            if rw.get("Nature") == "ChildOf" and rw.get("View_ID") == "1000":
                rels.append((node, f"cwe:CWE-{rw.get('CWE_ID')}", "child_of"))
        for ap in w.iterfind("c:Related_Attack_Patterns/c:Related_Attack_Pattern", ns):
            rels.append((node, f"capec:CAPEC-{ap.get('CAPEC_ID')}", "enables"))
    for a, b, k in rels:
        if b in g and g.nodes[b].get("type") in ("cwe", "capec") and (k != "child_of" or b in keep):
            g.add_edge(a, b, key=k, type=k)
            stats[f"edge_cwe_{k}"] += 1
    # CWE ids referenced by CAPEC but absent/deprecated in the catalogue: drop the placeholder nodes.
    for n in [n for n, d in g.nodes(data=True) if n.startswith("cwe:") and "type" not in d]:
        g.remove_node(n)
        stats["dropped_exploits"] += 1
    stats["edge_exploits"] = sum(1 for *_, k in g.edges(keys=True) if k == "exploits")


def _restrictions(pairs: list) -> list[tuple[str, str]]:
    out = []
    for p, o in pairs:
        if p == "rdfs:subClassOf" and isinstance(o, list):
            d = dict((k, v) for k, v in o if isinstance(v, str))
            if "owl:onProperty" in d and "owl:someValuesFrom" in d:
                out.append((d["owl:onProperty"], d["owl:someValuesFrom"]))
    return out


def add_d3fend(g: nx.MultiDiGraph, path: Path, stats: Counter) -> None:
    """Add D3FEND defensive techniques and ``counters`` edges to ATT&CK techniques.

    D3FEND links defences to attacks through digital artifacts: an offensive technique
    produces/uses/modifies artifact A (OWL restrictions on the ATT&CK class), a defensive
    technique analyzes/filters/isolates artifact B; the defence counters the attack when A is B
    or a subclass of B. Restrictions are inherited down ``rdfs:subClassOf`` on both sides.
    """
    d = parse_turtle(Path(path).read_text())
    parents = {s: [o for p, o in pairs if p == "rdfs:subClassOf" and isinstance(o, str)] for s, pairs in d.items()}
    own = {s: _restrictions(pairs) for s, pairs in d.items()}
    deprecated = {s for s, pairs in d.items() if ("owl:deprecated", "true") in pairs}

    def ancestors(s: str) -> set[str]:
        seen, stack = set(), [s]
        while stack:
            x = stack.pop()
            for p in parents.get(x, []):
                if p not in seen:
                    seen.add(p)
                    stack.append(p)
        return seen

    def is_artifact(a: str) -> bool:
        return ":DigitalArtifact" in ancestors(a)

    def artifacts(s: str, id_key: str) -> set[str]:
        # Inherit only from parent techniques of the same kind (not from tactic/root classes),
        # and keep only digital artifacts (not tactics such as :Detect).
        arts = {a for _, a in own.get(s, [])}
        for anc in ancestors(s):
            if anc in d and any(p == id_key for p, _ in d[anc]):
                arts |= {a for _, a in own.get(anc, [])}
        return {a for a in arts if is_artifact(a)}

    def attr(s: str, key: str) -> str:
        for p, o in d[s]:
            if p == key and isinstance(o, str):
                return literal(o)
        return ""

    defensive, offensive = {}, {}
    for s, pairs in d.items():
        keys = {p for p, _ in pairs}
        if ":d3fend-id" in keys and s not in deprecated:
            defensive[s] = attr(s, ":d3fend-id")
        elif ":attack-id" in keys and s not in deprecated:
            offensive[s] = attr(s, ":attack-id")
    art_anc: dict[str, set[str]] = {}
    for s, did in defensive.items():
        node = f"d3fend:{did}"
        name = attr(s, "rdfs:label")
        g.add_node(node, type="d3fend", name=name, source="d3fend", source_id=did,
                   url=f"https://d3fend.mitre.org/technique/d3f:{s.lstrip(':')}/", description=attr(s, ":definition"))
        stats["d3fend"] += 1
    def_arts = {s: artifacts(s, ":d3fend-id") for s in defensive}
    # Sorted iteration everywhere: set order changes with PYTHONHASHSEED, and the first artifact that
    # creates an edge names its ``via`` — the artifact must not depend on the process.
    for s, aid in sorted(offensive.items()):
        tnode = f"attack:{aid}"
        if tnode not in g:
            stats["d3fend_unknown_attack_id"] += 1
            continue
        for art in sorted(artifacts(s, ":attack-id")):
            if art not in art_anc:
                art_anc[art] = ancestors(art) | {art}
            for ds, darts in sorted(def_arts.items()):
                hit = darts & art_anc[art]
                if hit:
                    dnode = f"d3fend:{defensive[ds]}"
                    specific = art in darts  # same artifact, not only a super-class of it
                    if not g.has_edge(dnode, tnode, "counters"):
                        g.add_edge(dnode, tnode, key="counters", type="counters", via=sorted(hit)[0].lstrip(":"),
                                   exact=specific)
                        stats["edge_counters"] += 1
                    elif specific:
                        g.edges[dnode, tnode, "counters"]["exact"] = True


def build_graph(data_dir: str | Path | None = None) -> tuple[nx.MultiDiGraph, Counter]:
    """Build the whole typed graph from the four sources; returns (graph, counts of what was loaded/skipped)."""
    data = Path(data_dir) if data_dir else DEFAULT_DATA
    g = nx.MultiDiGraph()
    stats: Counter = Counter()
    add_attack(g, data / FILES["attack"], stats)
    if (data / FILES["capec"]).exists():
        add_capec(g, data / FILES["capec"], stats)
    if (data / FILES["cwe"]).exists():
        add_cwe(g, data / FILES["cwe"], stats)
    if (data / FILES["d3fend"]).exists():
        add_d3fend(g, data / FILES["d3fend"], stats)
    return g, stats


def technique_sections(g: nx.MultiDiGraph, node: str, max_analytics: int = 12) -> tuple[str, str]:
    """(name + description, detection guidance) of a technique. The detection part gathers its ATT&CK v18
    detection strategies -> analytics, with the data components they observe."""
    d = g.nodes[node]
    desc = "\n".join(p for p in (d.get("name", ""), d.get("description", "")) if p)
    parts: list[str] = []
    if d.get("type") in ("technique", "subtechnique"):
        n = 0
        for strat, _, k in g.in_edges(node, keys=True):
            if k != "detects":
                continue
            parts.append("Detection: " + g.nodes[strat].get("name", ""))
            for _, an, k2 in sorted(g.out_edges(strat, keys=True)):
                if k2 == "has_analytic" and n < max_analytics:
                    parts.append(g.nodes[an].get("description", ""))
                    comps = [g.nodes[c].get("name", "") for _, c, k3 in g.out_edges(an, keys=True) if k3 == "observes"]
                    if comps:
                        parts.append("Data components: " + ", ".join(sorted(set(comps))) + ".")
                    n += 1
    return desc, "\n".join(p for p in parts if p)


def technique_text(g: nx.MultiDiGraph, node: str, max_analytics: int = 12) -> str:
    """Text an extractor reads for a technique: name, description, then detection guidance."""
    return "\n".join(p for p in technique_sections(g, node, max_analytics) if p)


def techniques(g: nx.MultiDiGraph) -> list[str]:
    """ATT&CK technique and sub-technique node ids, sorted."""
    return sorted(n for n, d in g.nodes(data=True) if d.get("type") in ("technique", "subtechnique"))

"""ATT&CK names and tactics of technique ids, from the bundled knowledge artifact.

``describe("T1498")`` gives the OCSF attack objects of a finding (``finding_info.attacks[]``): one per
tactic of the technique, each ``{"technique": {"uid", "name"}, "tactic": {"uid", "name"}, "version"}``.
Ids the artifact does not list (a behaviour technique outside its feature block) fall back to
:data:`EXTRA`; an unknown id keeps its uid with an empty name.
"""
from __future__ import annotations

import json
from functools import lru_cache

ATTACK_VERSION = "18.1"

#: techniques raised by knowledge.behaviour_predicates that the artifact's feature block may lack
EXTRA: dict[str, tuple[str, tuple[str, ...]]] = {
    "T1008": ("Fallback Channels", ("TA0011",)),
}


@lru_cache(maxsize=1)
def _tables() -> tuple[dict, dict]:
    from knowledge.features import DEFAULT_ARTIFACT

    try:
        spec = json.loads((DEFAULT_ARTIFACT / "features.json").read_text())
    except (OSError, ValueError):  # no artifact: ids only
        return {}, {}
    tactics = {t["id"]: t["name"] for t in spec.get("tactics", [])}
    techs = {t["id"]: (t["name"], tuple(t.get("tactics") or ())) for t in spec.get("techniques", [])}
    return techs, tactics


def technique(tid: str) -> tuple[str, tuple[str, ...]]:
    """``(name, tactic ids)`` of an ATT&CK technique id (``("", ())`` when unknown)."""
    techs, _ = _tables()
    if tid in techs:
        return techs[tid]
    if tid in EXTRA:
        return EXTRA[tid]
    parent = tid.split(".")[0]
    if parent != tid and parent in techs:  # a sub-technique the artifact lacks: its parent's tactics
        return "", techs[parent][1]
    return "", ()


def tactic_name(ta: str) -> str:
    return _tables()[1].get(ta, "")


def attacks(tid: str) -> list[dict]:
    """OCSF attack objects of one technique: one per tactic (one without a tactic when it has none)."""
    name, tactics = technique(tid)
    tech = {"uid": tid, "name": name}
    if not tactics:
        return [{"technique": tech, "version": ATTACK_VERSION}]
    return [{"technique": tech, "tactic": {"uid": ta, "name": tactic_name(ta)}, "version": ATTACK_VERSION}
            for ta in tactics]

"""knowledge.behaviour_predicates: the registry's shape, the techniques it names, and fired() on
hand-made behaviour features (the features themselves are tested in tests/ingest/test_behaviour.py)."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from ingest.behaviour import FEATURE_NAMES, FEATURES_SCHEMA
from knowledge.behaviour_predicates import (BEHAVIOUR_PREDICATE_NAMES, BEHAVIOUR_PREDICATES, FIRE_THRESHOLD,
                                            TECHNIQUE_LINKS, TECHNIQUES, compute_behaviour_predicates, fired,
                                            technique_scores)
from knowledge.predicates import PREDICATE_NAMES, Predicate

REQUIRED = {"T1071", "T1571", "T1041", "T1029", "T1030", "T1008"}


def feats(**cols) -> dict[str, np.ndarray]:
    """Behaviour features for len(first value) flows: the named columns, every other one neutral."""
    n = len(next(iter(cols.values())))
    out = {name: np.zeros(n, dtype=np.float32) for name in FEATURE_NAMES}
    out["pair_gap_cv"][:] = 1.0
    out["pair_gap_pattern"][:] = 1.0
    out["src_streak_age_s"][:] = 86_400.0
    for k, v in cols.items():
        assert k in out, k
        out[k] = np.asarray(v, dtype=np.float32)
    return out


def test_registry_shape_and_links():
    assert REQUIRED <= set(TECHNIQUES)
    assert set(BEHAVIOUR_PREDICATE_NAMES) == set(TECHNIQUE_LINKS)
    # kept out of the window registry: the model's knowledge columns (its input width) stay as they are
    assert not set(BEHAVIOUR_PREDICATE_NAMES) & set(PREDICATE_NAMES)
    for name, p in BEHAVIOUR_PREDICATES.items():
        assert isinstance(p, Predicate) and p.name == name and len(p.description) > 40
        assert all(0 < w <= 1 for w in TECHNIQUE_LINKS[name].values())
    # every required technique can fire from some predicate alone
    strongest = {t: max(TECHNIQUE_LINKS[p].get(t, 0) for p in TECHNIQUE_LINKS) for t in REQUIRED}
    assert min(strongest.values()) >= FIRE_THRESHOLD, strongest


def test_techniques_exist_in_attack(shared_data):
    path = shared_data / "knowledge" / "enterprise-attack.json"
    if not path.is_file():
        pytest.skip(f"{path} absent")
    ids = {}
    for obj in json.loads(path.read_text())["objects"]:
        if obj.get("type") == "attack-pattern":
            for ref in obj.get("external_references", []):
                if ref.get("source_name") == "mitre-attack":
                    ids[ref["external_id"]] = obj
    for t in TECHNIQUES:
        assert t in ids, t
        assert not ids[t].get("revoked") and not ids[t].get("x_mitre_deprecated"), t


def test_activations_bounded_for_any_values():
    rng = np.random.default_rng(0)
    n = 1000
    cols = {name: rng.choice([0.0, 1.0, 1e9, -5.0, np.nan, np.inf, -np.inf], n) * rng.random(n)
            for name in FEATURE_NAMES}
    act = compute_behaviour_predicates(cols)
    assert act.shape == (n, len(BEHAVIOUR_PREDICATE_NAMES)) and act.dtype == np.float32
    assert np.isfinite(act).all() and act.min() >= 0 and act.max() <= 1


def test_fired_names_the_expected_technique_per_behaviour():
    f = feats(
        # 0 beacon, 1 jittery (Poisson-like), 2 rare port, 3 usual port, 4 streak only, 5 fallback,
        # 6 sustained upload, 7 equal-size chunks, 8 nothing
        pair_gaps=[50, 50, 0, 0, 0, 0, 0, 20, 0],
        pair_gap_cv=[0.02, 0.9, 1, 1, 1, 1, 1, 1.0, 1],
        pair_age_s=[3600, 3600, 0, 0, 60, 0, 7200, 600, 0],
        src_port_history=[0, 0, 100, 100, 0, 0, 0, 0, 0],
        src_port_coverage=[0, 0, 1.0, 1.0, 0, 0, 0, 0, 0],
        src_port_share=[0, 0, 0.0, 0.6, 0, 0, 0, 0, 0],
        pair_fail_streak=[0, 0, 0, 0, 30, 0, 0, 0, 0],
        pair_new=[0, 0, 0, 0, 0, 1, 0, 0, 0],
        src_streak_len=[0, 0, 0, 0, 29, 30, 0, 0, 0],
        src_streak_age_s=[86400, 86400, 86400, 86400, 1, 60, 86400, 86400, 86400],
        pair_up_1h=[1e3, 1e3, 0, 0, 0, 0, 5e6, 2e6, 0],
        pair_down_1h=[1e3, 1e3, 0, 0, 0, 0, 1e4, 1e4, 0],
        pair_flows=[51, 51, 0, 0, 30, 1, 700, 21, 0],
        pair_size_mean=[200, 200, 0, 0, 0, 0, 4e4, 65536, 0],
        pair_size_cv=[0.1, 0.1, 0, 0, 0, 0, 0.3, 0.0, 0],
    )
    got = fired(f).to_pylist()
    assert got == [["T1071"], [], ["T1571"], [], [], ["T1008"], ["T1041"], ["T1030"], []]
    # a periodic beacon that carries data out is a scheduled transfer (and exfiltration over C2) too
    f2 = {k: v[:1].copy() for k, v in f.items()}
    f2["pair_size_mean"][:] = 8192
    f2["pair_up_1h"][:] = 1e6
    assert fired(f2).to_pylist() == [["T1029", "T1041", "T1071"]]


def test_table_and_dict_agree_and_empty_input():
    rng = np.random.default_rng(1)
    cols = {name: rng.random(50).astype(np.float32) * 100 for name in FEATURE_NAMES}
    table = pa.table({k: pa.array(v) for k, v in cols.items()}, schema=FEATURES_SCHEMA)
    a = compute_behaviour_predicates(cols)
    assert np.array_equal(a, compute_behaviour_predicates(table))
    assert np.array_equal(technique_scores(a), technique_scores(table))
    assert fired(table).equals(fired(a))
    empty = fired(FEATURES_SCHEMA.empty_table())
    assert len(empty) == 0 and empty.type == pa.list_(pa.string())

"""``KnowledgeFeaturizer.explain`` ranks the listed techniques' predicate contributions and the fired
predicates in one sort; the result equals one full stable ``argsort`` per list with its positive entries
kept (the reference below), on ties, zeros, negatives and NaN, from a built or an unbuilt block."""
import numpy as np
import pytest

from knowledge.features import KnowledgeFeaturizer
from knowledge.features.featurizer import _positive_desc


def _reference(kf, kb, edge, k=5, min_score=0.05):
    """explain() as one argsort per list: the specification of its order."""
    row = kb.edge[edge]
    act, tech = row[: kb.n_pred], row[kb.tech_slice]
    out = []
    for j in np.argsort(-tech, kind="stable")[:k].tolist():
        if tech[j] < min_score:
            break
        t = kf.techniques[j]
        contrib = act * kf.weight[:, j]
        preds = [{"name": kf.predicates[p], "value": round(float(act[p]), 3),
                  "confidence": round(float(kf.weight[p, j]), 3)}
                 for p in np.argsort(-contrib, kind="stable").tolist() if contrib[p] > 0]
        out.append({"id": t["id"], "name": t["name"], "score": round(float(tech[j]), 4), "predicates": preds,
                    "tactics": t["tactics"],
                    "refs": {"attack": t["url"], "d3fend": t["d3fend"][:5], "mitigations": t["mitigations"][:5]}})
    fired = [{"name": kf.predicates[p], "value": round(float(act[p]), 3)}
             for p in np.argsort(-act, kind="stable").tolist() if act[p] > 0]
    return {"edge": edge, "node": None, "techniques": out, "predicates": fired, "artifact": kf.hash[:12]}


def test_positive_desc_equals_filtered_stable_argsort():
    rng = np.random.default_rng(0)
    m = np.round(rng.normal(size=(40, 60)), 1)  # many ties
    m[rng.random(m.shape) < 0.3] = 0.0
    m[rng.random(m.shape) < 0.05] = np.nan
    m[3] = -1.0  # a row with nothing positive
    m[4] = 0.5   # a row of equals
    got = _positive_desc(m)
    for r in range(len(m)):
        assert got[r] == [p for p in np.argsort(-m[r], kind="stable").tolist() if m[r, p] > 0]
    assert _positive_desc(np.zeros((0, 5))) == []


@pytest.fixture(scope="module")
def kf():
    return KnowledgeFeaturizer.default()


def test_explain_equals_one_sort_per_list(kf):
    import pyarrow as pa

    from ingest.schema import FLOW_SCHEMA, conform

    rng = np.random.default_rng(1)
    n = 400
    t = conform(pa.table({
        "row": pa.array(np.arange(n), pa.int64()),
        "ts": pa.array((1.7e15 + rng.uniform(0, 5e6, n)).astype(np.int64)).cast(pa.timestamp("us", tz="UTC")),
        "src_ip": pa.array([f"10.0.0.{i % 9}" for i in range(n)]),
        "dst_ip": pa.array([f"10.0.1.{i % 40}" for i in range(n)]),
        "src_port": pa.array(rng.integers(1024, 65535, n).astype(np.int32)),
        "dst_port": pa.array(rng.choice([22, 23, 53, 80, 445, 3389, 4444, 6667], n).astype(np.int32)),
        "proto": pa.array(rng.choice(["tcp", "udp"], n)),
        "conn_state": pa.array(rng.choice(["S0", "SF", "REJ"], n)),
        "duration": pa.array(rng.exponential(1.0, n)),
        "src_bytes": pa.array(rng.integers(0, 3000, n)), "dst_bytes": pa.array(rng.integers(0, 3000, n)),
        "src_pkts": pa.array(rng.integers(1, 20, n)), "dst_pkts": pa.array(rng.integers(0, 20, n)),
    }), FLOW_SCHEMA)
    unbuilt = kf.transform(t)
    built = kf.transform(t)
    _ = built.edge
    listed = 0
    for e in range(n):
        ref = _reference(kf, built, e)
        assert kf.explain(unbuilt, edge=e) == ref and kf.explain(built, edge=e) == ref
        listed += len(ref["techniques"])
    assert unbuilt._edge is None  # explain read single rows
    assert listed > n  # techniques were listed (the comparison covered the predicate lists)

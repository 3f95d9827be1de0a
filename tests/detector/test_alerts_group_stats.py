"""The alert build's all-groups-at-once statistics equal the per-group NumPy expressions they replace
(``np.nanargmax`` / ``nanmax`` / ``nanmean``, min / max, distinct counts, :func:`grouping.top`, the
source sketches), on groups with ties, NaN and infinite scores, single records and many sources."""
import numpy as np
import pyarrow as pa
import pytest

from detector.alerts.grouping import distinct_counts, group, top, top_all
from detector.alerts.ocsf import SKETCH_K, _GroupStats, _sketches


def _groups(seed: int, n: int = 3000):
    rng = np.random.default_rng(seed)
    src = [f"10.0.{i % 7}.{i % 300}" for i in rng.integers(0, 2000, n).tolist()]  # some groups > SKETCH_K sources
    dst = [f"192.168.0.{i}" for i in rng.integers(0, 30, n).tolist()]
    tech = rng.choice(["T1046", "T1071", "none", "T1110"], n).tolist()
    src[:5] = ["1.1.1.1"] * 5  # a group of one source
    for i in range(5, 705):  # a flood: one destination, 700 distinct sources (its sketch is cut at SKETCH_K)
        src[i], dst[i], tech[i] = f"172.16.{i // 256}.{i % 256}", "192.168.9.9", "T1498"
    return group(pa.array(src), pa.array(dst), tech), rng


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_group_stats_equal_per_group_numpy(seed):
    g, rng = _groups(seed)
    F = len(g.inverse)
    scores = np.round(rng.normal(2.0, 1.0, F), 1)  # rounded: many ties for the best record
    scores[rng.random(F) < 0.05] = np.nan
    scores[rng.random(F) < 0.01] = np.inf
    gi_all_nan = int(g.inverse[0])
    scores[g.members[gi_all_nan]] = np.nan  # a group without a finite score
    fp = rng.integers(0, 50000, F)
    ts = rng.uniform(1.7e9, 1.7e9 + 5, F)
    svc = rng.integers(0, 40, F)
    st = _GroupStats(g, scores, fp, ts, svc)
    for gi, m in enumerate(g.members):
        sc = scores[m]
        fin = np.isfinite(sc).any()
        assert bool(st.finite[gi]) == fin
        assert int(st.best[gi]) == (int(m[int(np.nanargmax(sc))]) if fin else int(m[0]))
        if fin:
            assert float(st.max_score[gi]) == float(np.nanmax(sc))
            ref = float(np.nanmean(sc))
            assert st.mean(gi) == ref or (np.isnan(ref) and np.isnan(st.mean(gi)))  # exactly nanmean's sum
        assert int(st.first_pos[gi]) == int(fp[m].min())
        assert float(st.ts_min[gi]) == float(ts[m].min()) and float(st.ts_max[gi]) == float(ts[m].max())
        assert int(st.services[gi]) == len(np.unique(svc[m]))
    assert not st.finite[gi_all_nan]


@pytest.mark.parametrize("seed", [3, 4])
def test_top_all_and_sketches_equal_per_group(seed):
    g, _ = _groups(seed)
    n_src, tops = top_all(g, g.src_codes, g.src_names, 10)
    n_dst, dtops = top_all(g, g.dst_codes, g.dst_names, 3)
    src_hash = np.fromiter((hash(x) for x in g.src_names), dtype=np.int64, count=len(g.src_names)).view(np.uint64)
    sketches = _sketches(g)
    assert max(len(m) for m in g.members) > SKETCH_K  # a group whose sketch is cut
    for gi, m in enumerate(g.members):
        assert (int(n_src[gi]), tops[gi]) == top(g.src_codes[m], g.src_names, 10)
        assert (int(n_dst[gi]), dtops[gi]) == top(g.dst_codes[m], g.dst_names, 3)
        ref = np.unique(src_hash[g.src_codes[m]])[:SKETCH_K]
        assert sketches[gi].dtype == np.uint64 and np.array_equal(sketches[gi], ref)
    assert np.array_equal(distinct_counts(g, g.dst_codes, len(g.dst_names)), n_dst)

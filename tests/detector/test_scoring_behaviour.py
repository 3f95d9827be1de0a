"""The scorer's long-horizon behaviour side channel (ingest.behaviour through StreamScorer, issue 17 s3).

A beacon every 60 s over 2 h among Poisson background, scored through a real small bundle: the beacon's
later flows get T1071, the background none; scores, alerts and knowledge techniques are the same with the
behaviour state on and off; sliding windows feed each flow once; alerts and `graphsentry score` take a
behaviour technique only where the window gave none.
"""
import copy
import dataclasses

import numpy as np
import pyarrow as pa
import pytest

from detector.alerts import build_alerts
from detector.scoring import StreamScorer, behaviour_top, score_table
from ingest.schema import FLOW_SCHEMA, conform
from ingest.windows import Sliding, window_all
from training.pretrain import TrainConfig, make_windows, train_bundle
from training.synthetic import synthetic_flows

pytestmark = pytest.mark.usefixtures("one_torch_thread")

T0 = 1.7e9
SPAN = 7200.0
BEACON_SRC, BEACON_DST = "10.0.0.99", "198.51.100.7"


def _stream(seed: int = 1) -> pa.Table:
    """A 60 s beacon (jitter +-0.5 s) over 2 h and 30 Poisson client->server pairs (mean gap 90 s)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(int(SPAN // 60)):
        rows.append(dict(ts=T0 + 5 + 60 * i + rng.uniform(-0.5, 0.5), src_ip=BEACON_SRC, dst_ip=BEACON_DST,
                         dst_port=443, proto="tcp", service="ssl", conn_state="SF",
                         src_bytes=int(rng.integers(200, 400)), dst_bytes=int(rng.integers(300, 900)), beacon=True))
    servers = [("93.184.216.34", 443, "tcp", "ssl"), ("8.8.8.8", 53, "udp", "dns"), ("151.101.1.69", 80, "tcp", "http")]
    for p in range(30):
        src = f"10.0.1.{p + 1}"
        dst, port, proto, svc = servers[p % len(servers)]
        t = T0 + rng.exponential(90.0)
        while t < T0 + SPAN:
            rows.append(dict(ts=t, src_ip=src, dst_ip=dst, dst_port=port, proto=proto, service=svc, conn_state="SF",
                             src_bytes=int(rng.lognormal(6, 0.5)), dst_bytes=int(rng.lognormal(8, 0.7)), beacon=False))
            t += rng.exponential(90.0)
    rows.sort(key=lambda r: r["ts"])
    cols = {k: [r[k] for r in rows] for k in rows[0] if k != "beacon"}
    n = len(rows)
    cols["ts"] = pa.array((np.array(cols["ts"]) * 1e6).astype("int64")).cast(pa.timestamp("us", tz="UTC"))
    cols.update(row=list(range(n)), uid=[f"B{i:06d}" for i in range(n)], source=["synthetic"] * n,
                duration=[0.5] * n, src_port=[int(x) for x in rng.integers(30000, 60000, n)], history=["ShADadFf"] * n,
                src_pkts=[2] * n, dst_pkts=[2] * n, label=[1 if r["beacon"] else 0 for r in rows])
    t = pa.table({k: (v if isinstance(v, pa.Array) else pa.array(v)) for k, v in cols.items()})
    return conform(t, FLOW_SCHEMA)


@pytest.fixture(scope="module")
def setup():
    train = synthetic_flows(n_benign=800, n_attack=60, duration=900, seed=3)
    bundle = train_bundle([train], TrainConfig(epochs=1, hidden=16, seed=0, objective="contrastive"), progress=False)
    table = _stream()
    return bundle, table, make_windows(table, float((bundle.window or {}).get("size", 60.0)))


def _set_threshold(bundle, thr: float) -> None:
    bundle.calibration = copy.copy(bundle.calibration)
    bundle.calibration.threshold = thr


def _flows(results, field):
    return np.concatenate([getattr(r, field) for r in results])


def test_beacon_fires_t1071_on_later_flows_not_on_background(setup):
    bundle, table, windows = setup
    res = StreamScorer(bundle, behaviour=True).score_windows(windows)
    rows = _flows(res, "rows")
    techs = _flows(res, "behaviour_techniques")
    assert len(techs) == len(rows) == table.num_rows
    src = np.asarray(table.column("src_ip").to_pylist(), dtype=object)[rows]
    ts = table.column("ts").cast(pa.int64()).to_numpy()[rows] / 1e6
    beacon = src == BEACON_SRC
    has = np.array(["T1071" in t for t in techs])
    later = beacon & (ts >= T0 + 1200)  # >= 19 gaps over >= 20 min: the predicate is fully on
    assert later.sum() >= 95 and has[later].all()
    assert not has[beacon & (ts < T0 + 240)].any()  # too few arrivals yet
    assert not has[~beacon].any(), "Poisson background fired T1071"
    assert all(isinstance(t, tuple) for t in techs)
    # the scores behind them, columns in TECHNIQUES order
    from knowledge.behaviour_predicates import TECHNIQUES

    sc = _flows(res, "behaviour_scores")
    assert sc.shape == (len(rows), len(TECHNIQUES)) and sc.dtype == np.float32
    assert (sc[later, TECHNIQUES.index("T1071")] >= 0.5).all()
    assert set(behaviour_top(sc[later])) == {"T1071"}
    # one window at a time gives the same
    one = StreamScorer(bundle, behaviour=True)
    single = [one.score_window(w) for w in windows]
    assert list(_flows(single, "behaviour_techniques")) == list(techs)
    assert one.behaviour.flows_seen == table.num_rows
    # several groups, built (and fed) in the worker thread ahead of scoring: the same
    many = StreamScorer(bundle, behaviour=True)
    many.BATCH_RECORDS = 300
    got = many.score_windows(windows)
    assert list(_flows(got, "behaviour_techniques")) == list(techs)
    assert np.array_equal(_flows(got, "behaviour_scores"), sc)


def test_scores_identical_with_behaviour_on_and_off(setup):
    """Behaviour evidence reaches scores only through the technique channel: without it, identical scores."""
    bundle, table, windows = setup
    bundle = copy.copy(bundle)
    bundle.technique = None
    on = StreamScorer(bundle, behaviour=True).score_windows(windows)
    off = StreamScorer(bundle, behaviour=False).score_windows(windows)
    for a, b in zip(on, off):
        assert np.array_equal(a.rows, b.rows)
        assert np.array_equal(a.scores, b.scores)
        assert np.array_equal(a.alerts, b.alerts)
        assert a.top_technique == b.top_technique
        assert np.array_equal(a.node_scores, b.node_scores)
        assert b.behaviour_techniques is None and b.behaviour_scores is None
        assert a.behaviour_techniques is not None
    # offline scoring: the Parquet contract unchanged, scores identical
    b_on, b_off = copy.copy(bundle), copy.copy(bundle)
    b_on.behaviour, b_off.behaviour = True, False
    t_on, t_off = score_table(b_on, table), score_table(b_off, table)
    assert t_on.schema == t_off.schema and t_on.column_names == ["row", "uid", "ts", "score", "alert",
                                                                 "top_technique", "reason"]
    for c in ("row", "score", "alert", "reason"):
        assert t_on.column(c).equals(t_off.column(c))


def test_score_output_fills_null_technique_of_alerts_only(setup, monkeypatch):
    bundle, table, _windows = setup
    monkeypatch.setattr(StreamScorer, "BATCH_RECORDS", 300)  # several groups: FlowScores per group
    b_on, b_off = copy.copy(bundle), copy.copy(bundle)
    b_on.behaviour, b_off.behaviour = True, False
    b_on.technique = b_off.technique = None  # the side channel alone (the technique channel names its own)
    _set_threshold(b_on, -np.inf)  # every flow an alert
    _set_threshold(b_off, -np.inf)
    on, off = score_table(b_on, table), score_table(b_off, table)
    assert on.column("alert").equals(off.column("alert")) and on.column("score").equals(off.column("score"))
    top_on, top_off = on.column("top_technique").to_pylist(), off.column("top_technique").to_pylist()
    src = table.column("src_ip").to_pylist()
    ts = table.column("ts").cast(pa.int64()).to_numpy() / 1e6
    changed = [i for i in range(len(top_on)) if top_on[i] != top_off[i]]
    assert changed, "no alert took a behaviour technique"
    for i in changed:
        assert top_off[i] is None and top_on[i] == "T1071" and src[i] == BEACON_SRC
    late_beacon = [i for i in range(len(src)) if src[i] == BEACON_SRC and ts[i] >= T0 + 1200]
    assert all(top_on[i] is not None for i in late_beacon)
    # not alerts: nothing filled
    _set_threshold(b_on, np.inf)
    assert all(t is None or t in top_off for t in score_table(b_on, table).column("top_technique").to_pylist())


def test_sliding_windows_feed_each_flow_once(setup):
    bundle, table, windows = setup
    tumbling = StreamScorer(bundle, behaviour=True).score_windows(windows)
    ref = dict(zip(_flows(tumbling, "rows").tolist(), _flows(tumbling, "behaviour_techniques")))
    srt = table.sort_by([("ts", "ascending"), ("row", "ascending")])
    sliding, _w = window_all(srt.to_batches(), Sliding(180.0, 60.0), lateness=0.0)
    sc = StreamScorer(bundle, behaviour=True)
    res = sc.score_windows(sliding)
    assert sum(w.table.num_rows for w in sliding) > 2 * table.num_rows  # flows are in up to 3 windows
    assert sc.behaviour.flows_seen == table.num_rows
    for r in res:
        # a flow gets the techniques it got when fed (the same as with tumbling windows, same feeding order)
        assert [ref[int(x)] for x in r.rows] == list(r.behaviour_techniques)


def test_reset_and_switches(setup, monkeypatch):
    bundle, table, windows = setup
    sc = StreamScorer(bundle, behaviour=True)
    first = sc.score_windows(windows[:40])
    sc.reset()
    assert sc.behaviour is None
    again = sc.score_windows(windows[:40])
    assert [list(a.behaviour_techniques) for a in first] == [list(b.behaviour_techniques) for b in again]
    assert sc.behaviour.flows_seen == sum(w.table.num_rows for w in windows[:40])
    monkeypatch.setenv("GRAPHSENTRY_BEHAVIOUR", "0")
    assert not StreamScorer(bundle).behaviour_enabled
    assert StreamScorer(bundle, behaviour=True).behaviour_enabled
    monkeypatch.setenv("GRAPHSENTRY_BEHAVIOUR", "1")
    assert StreamScorer(bundle).behaviour_enabled
    monkeypatch.delenv("GRAPHSENTRY_BEHAVIOUR")
    assert StreamScorer(bundle).behaviour_enabled is StreamScorer.BEHAVIOUR
    b = copy.copy(bundle)
    b.behaviour = {"capacity": 1000}
    sc = StreamScorer(b)
    sc.score_window(windows[0])
    assert sc.behaviour.params.capacity == 1000


def test_alerts_carry_behaviour_techniques(setup):
    bundle, table, windows = setup
    sc = StreamScorer(bundle, behaviour=True)
    res = sc.score_windows(windows)
    k = next(i for i, w in enumerate(windows) if w.start >= T0 + 1800)
    w, ws = windows[k], res[k]
    src = np.asarray(w.table.column("src_ip").to_pylist(), dtype=object)
    beacon = src == BEACON_SRC
    assert beacon.any() and all("T1071" in ws.behaviour_techniques[i] for i in np.flatnonzero(beacon))
    # flag every flow (the decision is the scorer's; here we look at what the findings carry)
    flagged = dataclasses.replace(ws, alerts=np.ones(len(ws.rows), bool), top_technique=[None] * len(ws.rows))
    wa = build_alerts(w, flagged, threshold=ws.threshold, now=0.0)
    assert wa.flagged == len(ws.rows)
    found = [a for a in wa.alerts if a["src_endpoint"]["ip"] == BEACON_SRC]
    assert len(found) == 1
    a = found[0]
    assert a["unmapped"]["technique"] == "T1071" and a["unmapped"]["technique_source"] == "behaviour"
    assert [(x["technique"]["uid"], x["tactic"]["uid"]) for x in a["finding_info"]["attacks"]] == [("T1071", "TA0011")]
    assert "T1071" in a["unmapped"]["behaviour_techniques"]
    assert "T1071" in a["evidences"][0]["data"]["behaviour"]["techniques"]
    others = [a for a in wa.alerts if a["src_endpoint"]["ip"] != BEACON_SRC]
    assert others and all(o["unmapped"]["technique"] == "none" and o["unmapped"]["behaviour_techniques"] == []
                          and o["unmapped"]["technique_source"] is None for o in others)
    # a knowledge technique wins over a behaviour one
    know = dataclasses.replace(flagged, top_technique=["T1046"] * len(ws.rows))
    a2 = [a for a in build_alerts(w, know, now=0.0).alerts if a["src_endpoint"]["ip"] == BEACON_SRC][0]
    assert a2["unmapped"]["technique"] == "T1046" and a2["unmapped"]["technique_source"] == "knowledge"
    assert "T1071" in a2["unmapped"]["behaviour_techniques"]
    # without behaviour: the findings as before (no behaviour keys), the same flagged count
    off = dataclasses.replace(flagged, behaviour_techniques=None, behaviour_scores=None)
    wa_off = build_alerts(w, off, threshold=ws.threshold, now=0.0)
    assert wa_off.flagged == wa.flagged
    assert all("behaviour_techniques" not in a["unmapped"] and a["unmapped"]["technique"] == "none"
               for a in wa_off.alerts)

"""Severity of a finding: technique impact (tactic), records, spread, score margin, direction; and on the bundled
Stratosphere 010 sample, the labelled inbound attack is High or Critical while the monitored host's own traffic
is not."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from detector.alerts.severity import FindingFacts, Networks, impact, points, severity
from detector.alerts.stage import AlertStage
from detector.scoring import WindowScores
from ingest.windows import EventTimeWindower, Tumbling

from daemon_helpers import read_flows  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "stratosphere" / "010-zeek-mixed.conn.log.labeled"


@pytest.mark.parametrize("tid, want", [(None, 0), ("none", 0), ("T1595.001", 1), ("T1046", 1), ("T1498", 3),
                                       ("T1071", 3), ("T1041", 3), ("T1110", 3), ("T1008", 3)])
def test_impact_comes_from_the_tactics(tid, want):
    assert impact(tid) == want


SEVERITY_CASES = [
    (FindingFacts(None, 1, max_score=1.1, threshold=1.0), 2),                          # one unexplained flow: Low
    (FindingFacts(None, 1, max_score=5.0, threshold=1.0, direction="inbound"), 3),  # far over, inbound: Medium
    (FindingFacts("T1046", 3000, services=3000, max_score=150.0, threshold=20.0), 4),  # a scan, direction unknown
    (FindingFacts("T1498", 1_000_000, sources=1_000_000, max_score=2.5, threshold=1.0, direction="inbound"), 5),
    (FindingFacts("T1498", 10, max_score=1.1, threshold=1.0), 3),                      # a few flood-like flows
    # 5 points, but no technique: High at most
    (FindingFacts(None, 5000, sources=900, max_score=9.0, threshold=1.0, direction="inbound"), 4),
    (FindingFacts("T1071", 60, max_score=2.0, threshold=1.0, direction="outbound"), 5),       # C2 out, volume, margin
    (FindingFacts("T1071", 60, max_score=2.0, threshold=1.0, direction="inbound"), 4),        # C2 the wrong way
    (FindingFacts("T1046", 60, max_score=3.0, threshold=1.0, direction="internal"), 4),       # east-west port scan
    (FindingFacts("T1046", 60, max_score=3.0, threshold=1.0, direction="outbound"), 3),       # scanning out
]


@pytest.mark.parametrize("facts, sev", SEVERITY_CASES)
def test_severity_levels(facts, sev):
    assert severity(facts) == sev


@pytest.mark.parametrize("tid, direction, point", [
    (None, "inbound", 1), (None, "internal", 0), ("T1595", "inbound", 1), ("T1595", "outbound", 0),
    ("T1046", "internal", 1), ("T1021", "internal", 1), ("T1041", "outbound", 1), ("T1041", "inbound", 0),
    ("T1498", "inbound", 1), ("T1498", "external", 0),
])
def test_direction_point_follows_the_tactic(tid, direction, point):
    assert points(FindingFacts(tid, 1, direction=direction))["direction"] == point


def test_critical_needs_a_named_technique_of_impact_two_or_more():
    big = dict(records=10**6, sources=10**6, max_score=10.0, threshold=1.0, direction="inbound")
    assert severity(FindingFacts(None, **big)) == 4
    assert sum(points(FindingFacts("T1595", **big)).values()) >= 6 and severity(FindingFacts("T1595", **big)) == 4
    assert severity(FindingFacts("T1498", **big)) == 5


def test_transactions_have_fraud_impact_and_no_direction():
    p = points(FindingFacts(None, 1, transactions=True, direction="inbound"))
    assert p["impact"] == 2 and p["direction"] == 0


def test_networks_decide_direction():
    n = Networks(["147.32.0.0/16"])
    assert n.inbound("79.124.62.34", "147.32.83.234") and not n.inbound("147.32.83.234", "79.124.62.34")
    assert not n.internal("C000123")                      # a card id is no address
    assert Networks().inbound("8.8.8.8", "192.168.1.2") and not Networks().inbound("10.0.0.1", "10.0.0.2")
    assert [Networks().direction(s, d) for s, d in [("8.8.8.8", "10.0.0.1"), ("10.0.0.1", "8.8.8.8"),
                                                     ("10.0.0.1", "10.0.0.2"), ("8.8.8.8", "1.1.1.1")]] == \
        ["inbound", "outbound", "internal", "external"]
    with pytest.raises(ValueError, match="expected CIDRs"):
        Networks(["10.0.0.0/33"])


def test_sample_attack_is_high_and_the_hosts_own_traffic_is_not():
    """Every record flagged at the same score (so only aggregation and severity decide): the internet's scans
    of the monitored host 147.32.83.234 (labelled malicious) must page, the host's own flows (benign) not."""
    t = read_flows(SAMPLE)
    labels = dict(zip(t.column("row").to_pylist(), t.column("label").to_pylist()))
    stage = AlertStage.from_config({"incident_gap": 600.0, "internal_networks": ["147.32.0.0/16"]})
    w = EventTimeWindower(Tumbling(300.0), lateness=900.0)
    final: dict[str, dict] = {}
    members: dict[str, list[int]] = {}
    for win in w.push(t) + w.flush():
        rows = win.table.column("row").to_numpy()
        n = len(rows)
        ws = WindowScores(rows=rows, scores=np.full(n, 1.1), alerts=np.ones(n, bool), top_technique=[None] * n,
                          node_scores=np.zeros(0))
        wa = stage.build(win, ws, threshold=1.0, now=0.0)
        for a in wa.alerts:
            final[a["finding_info"]["uid"]] = a
        for r, fid in zip(rows.tolist(), wa.finding_of):
            members.setdefault(fid, []).append(r)
    attack = [f for f, rs in members.items() if all(labels[r] == 1 for r in rs)]
    benign = [f for f, rs in members.items() if all(labels[r] == 0 for r in rs)]
    assert attack and benign
    # the scan campaign is a few ongoing findings against the host, the largest High, keyed by destination
    big = max(attack, key=lambda f: final[f]["unmapped"]["count"])
    a = final[big]
    assert a["unmapped"]["group_by"] == "dst" and a["unmapped"]["key"] == "147.32.83.234"
    assert a["unmapped"]["count"] > 1000 and a["unmapped"]["sources"] > 500 and a["unmapped"]["windows"] > 50
    assert a["severity"] in ("High", "Critical") and a["activity_id"] == 2
    assert sum(final[f]["unmapped"]["count"] for f in attack) > 0.9 * sum(v == 1 for v in labels.values())
    assert all(final[f]["severity_id"] <= 3 for f in benign)
    assert len(final) < 0.1 * t.num_rows                   # findings, not records

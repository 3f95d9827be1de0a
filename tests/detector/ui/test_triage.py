"""Triage state: actions, history, kept apart from the alert records, exported as retraining labels."""
from __future__ import annotations

import pytest

from detector.alerts.sinks import SQLiteAlertStore
from detector.ui.store import AlertQueue, Query
from detector.ui.triage import TriageError, TriageStore, export_verdicts
from ingest.verdicts import BENIGN, MALICIOUS, read_verdicts


def test_actions_and_history(tmp_path):
    t = TriageStore(tmp_path / "t.db")
    assert t.state("a1")["status"] == "new"
    t.apply("a1", {"action": "ack"}, "ana", now=1.0)
    t.apply("a1", {"action": "assign", "assignee": "bob"}, "ana", now=2.0)
    t.apply("a1", {"action": "comment", "text": "looks like the lab scanner"}, "bob", now=3.0)
    t.apply("a1", {"action": "escalate", "reason": "touches prod"}, "bob", now=4.0)
    s = t.apply("a1", {"action": "close", "verdict": "true_positive", "reason": "confirmed"}, "bob", now=5.0)
    assert s == {"status": "closed", "verdict": "true_positive", "reason": "confirmed", "assignee": "bob", "updated": 5.0}
    h = t.history("a1")
    assert [x["action"] for x in h] == ["ack", "assign", "comment", "escalate", "close"]
    assert h[2]["detail"]["text"] == "looks like the lab scanner" and h[2]["actor"] == "bob"
    s = t.apply("a1", {"action": "reopen"}, "ana", now=6.0)
    assert s["status"] == "new" and s["verdict"] is None and s["assignee"] == "bob"
    assert t.revision() == 6


@pytest.mark.parametrize("body, match", [
    ({"action": "delete"}, "unknown action"),
    ({"action": "close", "verdict": "maybe", "reason": "x"}, "verdict"),
    ({"action": "close", "verdict": "true_positive"}, "reason"),
    ({"action": "assign", "assignee": "x" * 65}, "longer"),
    ({"action": "comment", "text": 5}, "text"),
    ([1, 2], "JSON object"),
])
def test_bad_actions_are_refused_and_change_nothing(tmp_path, body, match):
    t = TriageStore(tmp_path / "t.db")
    with pytest.raises(TriageError, match=match):
        t.apply("a1", body, "ana")
    assert t.revision() == 0 and t.state("a1")["status"] == "new"


def test_reimport_never_overwrites_a_verdict(alert_store):
    """The daemon re-scores a window (upsert of the same ids): the verdict stays."""
    triage = alert_store.tmp / "alerts.db.triage.db"
    t = TriageStore(triage)
    a = alert_store.found["flows"][0]
    aid = a["finding_info"]["uid"]
    t.apply(aid, {"action": "close", "verdict": "false_positive", "reason": "backup job"}, "ana")
    store = SQLiteAlertStore(alert_store.db)
    a2 = {**a, "unmapped": {**a["unmapped"], "count": a["unmapped"]["count"] + 5}}
    store.write([a2])
    store.flush()
    store.close()
    q = AlertQueue(alert_store.db, triage)
    row = [x for x in q.page(Query(limit=200))["items"] if x["id"] == aid][0]
    assert row["count"] == a["unmapped"]["count"] + 5
    assert row["status"] == "closed" and row["verdict"] == "false_positive"


def test_export_round_trips_through_the_retraining_reader(tmp_path):
    t = TriageStore(tmp_path / "t.db")
    t.apply("aaaa1111", {"action": "close", "verdict": "true_positive", "reason": "C2, see ticket 7"}, "ana")
    t.apply("bbbb2222", {"action": "close", "verdict": "false_positive", "reason": "backup\njob"}, "ana")
    t.apply("cccc3333", {"action": "ack"}, "ana")  # not closed: no label
    t.apply("dddd4444", {"action": "close", "verdict": "true_positive", "reason": "x"}, "ana")
    t.apply("dddd4444", {"action": "reopen"}, "ana")  # reopened: no label
    n = export_verdicts(t, tmp_path / "v.csv")
    v = read_verdicts(tmp_path / "v.csv")
    assert n == 2 and v.by_alert == {"aaaa1111": MALICIOUS, "bbbb2222": BENIGN} and not v.bad_lines

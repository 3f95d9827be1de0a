"""The queue's SQL: filters, include/exclude, sorting, paging, grouping; the store is never written."""
from __future__ import annotations

import sqlite3

import pytest

from detector.ui.store import AlertQueue, Query
from detector.ui.triage import TriageStore

from .conftest import T0, XSS_DST, XSS_SRC


def _q(**kw) -> Query:
    return Query.from_params({k: v if isinstance(v, list) else [str(v)] for k, v in kw.items()})


@pytest.fixture
def queue(alert_store):
    TriageStore(alert_store.tmp / "triage.db").close()
    return AlertQueue(alert_store.db, alert_store.tmp / "triage.db")


def _rows(db) -> list:
    c = sqlite3.connect(db)
    try:
        return c.execute("SELECT * FROM alerts ORDER BY id").fetchall()
    finally:
        c.close()


def test_page_lists_every_alert_newest_first(alert_store, queue):
    n = len(alert_store.found["flows"]) + len(alert_store.found["tx"])
    page = queue.page(_q(limit=100))
    assert page["total"] == n and len(page["items"]) == n
    starts = [a["window_start"] for a in page["items"]]
    assert starts == sorted(starts, reverse=True)
    tx = [a for a in page["items"] if a["kind"] == "transaction"]
    assert tx and tx[0]["src"] == "4711" and tx[0]["amount"] is not None


def test_paging_is_disjoint_and_complete(queue):
    total = queue.page(_q())["total"]
    seen = []
    for off in range(0, total, 4):
        seen += [a["id"] for a in queue.page(_q(limit=4, offset=off))["items"]]
    assert len(seen) == total == len(set(seen))


@pytest.mark.parametrize("params, check", [
    ({"severity": 3}, lambda a: a["severity_id"] >= 3),
    ({"technique": "T1046"}, lambda a: [t["id"] for t in a["techniques"]] == ["T1046"]),
    ({"host": "10.0.0.2"}, lambda a: "10.0.0.2" in (a["src"], a["dst"])),
    ({"since": T0 + 600, "until": T0 + 900}, lambda a: a["last_seen"] >= T0 + 600 and a["first_seen"] < T0 + 900),
    ({"since": T0 + 86400}, lambda a: a["kind"] == "transaction"),
    ({"q": "window.__xss"}, lambda a: a["src"] == XSS_SRC),
    ({"f": ["-technique:none", "src:10.0.0.5"]}, lambda a: a["src"] == "10.0.0.5" and a["techniques"]),
    ({"f": [f"dst:{XSS_DST}"]}, lambda a: a["dst"] == XSS_DST),
])
def test_filters_keep_exactly_the_matching_alerts(queue, params, check):
    everything = queue.page(_q(limit=200))["items"]
    got = queue.page(_q(limit=200, **params))["items"]
    assert got, "the fixture has alerts for every filter"
    assert all(check(a) for a in got)
    assert {a["id"] for a in got} == {a["id"] for a in everything if check(a)}


@pytest.mark.parametrize("sort", ["severity", "score", "count", "src", "last_seen"])
def test_sorting(queue, sort):
    key = {"severity": "severity_id", "score": "score", "count": "count", "src": "src", "last_seen": "last_seen"}[sort]
    items = queue.page(_q(sort=sort, order="asc", limit=200))["items"]
    vals = [a[key] for a in items]
    assert vals == sorted(vals)


def test_groups_count_alerts_and_flows(alert_store, queue):
    g = queue.groups(_q(group="rule", limit=200))
    flows = alert_store.found["flows"] + alert_store.found["tx"]
    expect = {}
    for a in flows:
        u = a["unmapped"]
        src = a["src_endpoint"].get("ip") or a["src_endpoint"].get("uid")
        e = expect.setdefault((u["technique"], src), [0, 0])
        e[0] += 1
        e[1] += u["count"]
    got = {(i["key"]["technique"], i["key"]["src"]): [i["alerts"], i["flows"]] for i in g["items"]}
    assert got == expect and g["total"] == len(expect)


def test_status_filter_follows_triage(alert_store, queue):
    t = TriageStore(alert_store.tmp / "triage.db")
    aid = alert_store.found["flows"][0]["finding_info"]["uid"]
    t.apply(aid, {"action": "close", "verdict": "false_positive", "reason": "lab scanner"}, "ana")
    t.close()
    closed = queue.page(_q(status="closed"))["items"]
    assert [a["id"] for a in closed] == [aid] and closed[0]["verdict"] == "false_positive"
    assert aid not in {a["id"] for a in queue.page(_q(status="new", limit=200))["items"]}
    src = alert_store.found["flows"][0]["src_endpoint"]["ip"]
    g = {i["key"]["src"]: i for i in queue.groups(_q(group="host", limit=200))["items"]}[src]
    assert g["open"] == g["alerts"] - 1  # the closed one is no longer open
    closed_groups = queue.groups(_q(group="host", status="closed"))["items"]
    assert [(i["key"]["src"], i["alerts"], i["open"]) for i in closed_groups] == [(src, 1, 0)]


@pytest.mark.parametrize("params, message", [
    ({"sort": "finding; DROP TABLE alerts"}, "sort"),
    ({"group": "x"}, "group"),
    ({"f": ["nosuchfield:1"]}, "filter"),
    ({"limit": "ten"}, "not a number"),
])
def test_bad_parameters_are_refused(params, message):
    with pytest.raises(ValueError, match=message):
        _q(**params)


def test_store_rows_never_change(alert_store, tmp_path):
    before = _rows(alert_store.db)
    TriageStore(tmp_path / "t.db").close()
    q = AlertQueue(alert_store.db, tmp_path / "t.db")
    q.page(_q(q="10.0.0", sort="score"))
    q.groups(_q(group="host"))
    assert q.indexed  # writable: the queue's indexes were added, and only indexes
    assert _rows(alert_store.db) == before
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        q._db().execute("DELETE FROM alerts")


@pytest.mark.parametrize("in_memory", [0, 10_000])
def test_both_sort_plans_give_the_same_page(queue, monkeypatch, in_memory):
    import detector.ui.store as store

    expect = sorted((a for a in queue.page(_q(limit=200))["items"] if a["src"] != "4711"),
                    key=lambda a: (a["score"], a["id"]), reverse=True)
    monkeypatch.setattr(store, "SORT_IN_MEMORY", in_memory)
    got = queue.page(_q(sort="score", limit=5, f=["-src:4711"]))["items"]
    assert [a["id"] for a in got] == [a["id"] for a in expect[:5]]

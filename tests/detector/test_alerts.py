"""OCSF Detection Findings: aggregation per (key, technique) per window, stable ids, sinks."""
from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from detector.alerts import CLASS_UID, JsonLinesSink, SQLiteAlertStore, alert_key, build_alerts
from detector.alerts.sinks import make_sink, read_alert_store
from detector.scoring import WindowScores
from ingest.windows import EventTimeWindower, Tumbling

from daemon_helpers import FanoutScorer, make_flows  # noqa: E402  (tests/detector on sys.path via rootdir import)


def _windows(table, size=10.0):
    w = EventTimeWindower(Tumbling(size), lateness=0.0)
    return w.push(table) + w.flush()


def test_flood_is_one_alert_per_source_and_technique():
    t = make_flows(n_benign=200, n_scan=3000, duration=10.0)  # the scan fits in one 10 s window
    wins = _windows(t, size=100.0)
    assert len(wins) == 1
    ws = FanoutScorer().score_window(wins[0])
    wa = build_alerts(wins[0], ws, model_version="m1", threshold=20.0)
    assert wa.flagged == 3000
    assert len(wa.alerts) == 1 and wa.suppressed == 2999
    a = wa.alerts[0]
    assert a["class_uid"] == CLASS_UID == 2004 and a["type_uid"] == 200401
    assert a["src_endpoint"]["ip"] == "10.0.9.9"
    assert a["finding_info"]["attacks"][0]["technique"]["uid"] == "T1046"
    assert a["unmapped"]["count"] == 3000 and len(a["unmapped"]["rows"]) == 50
    assert a["severity"] == "High"              # a scan (discovery), a flood of records, far over threshold
    assert a["unmapped"]["group_by"] == "src"   # one scanner: keyed by its source
    assert a["metadata"]["product"]["version"] == "m1"
    ev = a["evidences"][0]
    assert ev["src_endpoint"]["ip"] == "10.0.9.9" and ev["data"]["score"] == a["unmapped"]["score"]
    json.dumps(a)  # serialisable as is


def test_one_alert_per_technique_and_destination_for_many_to_one():
    t = make_flows(n_benign=50, n_scan=0, duration=5.0)
    win = _windows(t, size=100.0)[0]
    n = win.table.num_rows
    rows = win.table.column("row").to_numpy()
    src = win.table.column("src_ip").to_pylist()
    alerts = np.ones(n, bool)
    techs = ["T1046" if i % 2 else "T1110" for i in range(n)]
    ws = WindowScores(rows=rows, scores=np.linspace(1, 2, n), alerts=alerts, top_technique=techs,
                      node_scores=np.zeros(0))
    wa = build_alerts(win, ws, threshold=1.0)
    dst = win.table.column("dst_ip").to_pylist()
    # T1046 and T1110 are many-to-one: 20 sources reach each of 5 servers, so one finding per (server, technique)
    assert len(wa.alerts) == len({(d, tt) for d, tt in zip(dst, techs)})
    assert {a["unmapped"]["group_by"] for a in wa.alerts} == {"dst"}
    assert sum(a["unmapped"]["count"] for a in wa.alerts) == n
    for a in wa.alerts:
        u = a["unmapped"]
        mine = [s for s, d, tt in zip(src, dst, techs) if d == u["key"] and tt == u["technique"]]
        assert u["sources"] == len(set(mine)) and u["count"] == len(mine)
        assert sum(t["count"] for t in u["top_sources"]) == len(mine)  # <= 10 sources: all listed


def test_no_flagged_records_no_alerts():
    win = _windows(make_flows(n_scan=0), size=100.0)[0]
    ws = FanoutScorer(threshold=1e9).score_window(win)
    assert build_alerts(win, ws).alerts == []


def test_alert_id_is_stable_across_runs_and_models():
    win = _windows(make_flows(), size=100.0)[0]
    a1 = build_alerts(win, FanoutScorer().score_window(win), model_version="a").alerts
    a2 = build_alerts(win, FanoutScorer().score_window(win), model_version="b").alerts
    assert [a["finding_info"]["uid"] for a in a1] == [a["finding_info"]["uid"] for a in a2]
    assert [alert_key(a) for a in a1] == [alert_key(a) for a in a2]


def test_sqlite_store_is_idempotent_and_jsonl_appends(tmp_path):
    win = _windows(make_flows(), size=100.0)[0]
    alerts = build_alerts(win, FanoutScorer().score_window(win)).alerts
    assert alerts
    db = SQLiteAlertStore(tmp_path / "a.db")
    for _ in range(2):  # a window re-scored after a crash writes the same alerts again
        db.record_window({"window_start": win.start, "window_end": win.end, "records": 1, "alerts": len(alerts),
                          "flagged": 1, "rows": [1, 2]})
        db.write(alerts)
        db.flush()
    assert db.count() == len(alerts)
    db.close()
    assert [a["finding_info"]["uid"] for a in read_alert_store(tmp_path / "a.db")] == \
        sorted(a["finding_info"]["uid"] for a in alerts)
    con = sqlite3.connect(tmp_path / "a.db")
    assert con.execute("SELECT COUNT(*) FROM windows").fetchone()[0] == 2
    con.close()
    j = JsonLinesSink(tmp_path / "a.jsonl")
    j.write(alerts)
    j.close()
    lines = (tmp_path / "a.jsonl").read_text().splitlines()
    assert [json.loads(x)["class_uid"] for x in lines] == [2004] * len(alerts)


def test_make_sink_rejects_unknown_type(tmp_path):
    with pytest.raises(ValueError, match="unknown alert sink type 'email'"):
        make_sink({"type": "email"})
    assert make_sink({"type": "alertmanager"}).required is False
    assert make_sink({"type": "sqlite", "path": str(tmp_path / "x.db")}).required is True

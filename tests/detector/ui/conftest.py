"""An alert store (and archive) written by the real components: findings from
``detector.alerts.ocsf.build_alerts`` on small flow and transaction windows, stored by
``SQLiteAlertStore``, records archived by ``ingest.archive.ArchiveWriter``.

Hosts: five scanners 10.0.0.1..5 -> 10.0.0.100 across four 5-minute windows, one host whose
address field holds script payloads (every string of a record is attacker-controlled), and a
transaction window (card fraud) in the same store.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest

from detector.alerts.incidents import IncidentTracker
from detector.alerts.ocsf import build_alerts
from detector.alerts.sinks import SQLiteAlertStore
from ingest.schema import FLOW_SCHEMA, TX_SCHEMA, conform

T0 = 1_700_000_000.0  # window starts are multiples of 300 s from here
XSS_SRC = "<script>window.__xss=1</script>"
XSS_DST = '"><img src=x onerror="window.__xss=2">'
XSS_UID = "<img src=x onerror=alert(1)>"


def _window(records: list[dict], start: float, end: float, schema: pa.Schema) -> SimpleNamespace:
    for i, r in enumerate(records):
        r.setdefault("row", i)
    cols = {f.name: [r.get(f.name) for r in records] for f in schema if any(f.name in r for r in records)}
    cols["ts"] = pa.array([int(r["ts"] * 1e6) for r in records], pa.int64()).cast(schema.field("ts").type)
    return SimpleNamespace(table=conform(pa.table(cols), schema), start=start, end=end)


def _scores(records: list[dict]) -> SimpleNamespace:
    return SimpleNamespace(rows=np.array([r["row"] for r in records]), scores=np.array([r["score"] for r in records]),
                           alerts=np.array([r["score"] > 1.0 for r in records]),
                           top_technique=[r.get("tech") for r in records])


def flow_windows() -> list[tuple[SimpleNamespace, list[dict]]]:
    rng = np.random.default_rng(7)
    out, row = [], 0
    for w in range(4):
        start = T0 + 300 * w
        recs = []
        for h in range(1, 6):
            for j in range(3 + h):
                hot = h <= w + 2  # more hosts turn anomalous in later windows
                recs.append({"uid": f"C{w}{h}{j}", "ts": start + 10 + j, "src_ip": f"10.0.0.{h}", "src_port": 40000 + j,
                             "dst_ip": "10.0.0.100", "dst_port": 20 + j, "proto": "tcp",
                             "score": float(1.5 + h / 2 + rng.random() if hot else 0.2 + rng.random() / 2),
                             "tech": "T1046" if h % 2 else None})
        if w == 1:
            recs.append({"uid": XSS_UID, "ts": start + 50, "src_ip": XSS_SRC, "src_port": 1, "dst_ip": XSS_DST,
                         "dst_port": 80, "proto": "tcp", "service": "<b>http</b>", "score": 9.0, "tech": None})
        for r in recs:
            r["row"] = row
            row += 1
        out.append((_window(recs, start, start + 300, FLOW_SCHEMA), recs))
    return out


def tx_window() -> tuple[SimpleNamespace, list[dict]]:
    start = T0 + 86400
    recs = [{"tx_id": f"t{i}", "ts": start + 60 * i, "customer_id": "4711" if i < 3 else f"c{i}", "terminal_id": f"T{i % 2}",
             "amount": 120.5 + i, "score": 2.0 if i < 3 else 0.1, "row": i} for i in range(6)]
    return _window(recs, start, start + 86400, TX_SCHEMA), recs


def write_store(path: Path, archive: Path | None = None) -> dict[str, list[dict]]:
    """Write the findings (and the archive) as the daemon does, consecutive windows of one activity folded
    into one finding (``IncidentTracker``); returns the findings by kind, the latest version of each."""
    store = SQLiteAlertStore(path)
    found: dict[str, list[dict]] = {"flows": [], "tx": []}
    tracker = IncidentTracker(gap=300.0)  # windows that follow each other fold
    writer = None
    if archive is not None:
        from ingest.archive import ArchiveWriter

        writer = ArchiveWriter(archive)
    for window, recs in flow_windows():
        ws = _scores(recs)
        wa = tracker.fold(build_alerts(window, ws, model_version="model-test", threshold=1.0, now=window.end + 5))
        store.write(wa.alerts)
        found["flows"] = [a for a in found["flows"] if a["finding_info"]["uid"] not in
                          {b["finding_info"]["uid"] for b in wa.alerts}] + wa.alerts
        if writer is not None:
            writer.write(window.table, scores=ws.scores, alerts=ws.alerts, model_version="model-test",
                         alert_ids=list(wa.finding_of))
    window, recs = tx_window()
    alerts = build_alerts(window, _scores(recs), model_version="fraud-test", threshold=1.0, now=window.end).alerts
    store.write(alerts)
    found["tx"] += alerts
    store.flush()
    store.close()
    if writer is not None:
        writer.flush()
        writer.close()
    return found


@pytest.fixture
def alert_store(tmp_path: Path) -> SimpleNamespace:
    db, archive = tmp_path / "alerts.db", tmp_path / "archive"
    found = write_store(db, archive)
    return SimpleNamespace(db=db, archive=archive, found=found, tmp=tmp_path)

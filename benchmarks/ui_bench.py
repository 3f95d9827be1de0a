"""Alert page speed with a large store: the queue's first page, server time and in-browser render.

Fills a SQLite alert store with N findings (default 100,000) built by the real
``detector.alerts.ocsf.build_alerts`` and written by ``SQLiteAlertStore``, serves it with
``detector.ui.server.UIServer`` on 127.0.0.1 and measures:

* server: the wall time of ``GET /api/alerts`` (first page of 50, newest first) and of filtered,
  sorted and grouped variants, best and median of several requests (an HTTP client on the same host);
* browser: Debian's headless Chromium (Playwright) loading ``/`` until the first page's rows are in
  the DOM, from navigation start (skipped without /usr/bin/chromium).

    .venv/bin/python benchmarks/ui_bench.py [--alerts 100000] [--out reports/ui_bench.json]
"""
from __future__ import annotations

import argparse
import copy
import json
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from detector.alerts.ocsf import alert_id, build_alerts  # noqa: E402
from detector.alerts.sinks import SQLiteAlertStore  # noqa: E402
from detector.ui.config import UIConfig  # noqa: E402
from detector.ui.server import UIServer  # noqa: E402
from ingest.schema import FLOW_SCHEMA, conform  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
TECHS = ["T1046", "T1110.001", "T1071", "T1090.003", None, None]


def _window_alerts(rng, start: float, k: int, first_row: int, tag: int) -> list[dict]:
    """One window's findings from the real build_alerts: ``k`` flagged sources, one alert each."""
    src = [f"10.{tag % 250}.{i // 250}.{i % 250}" for i in range(k)]
    dst = [f"172.16.{int(x)}.{int(y)}" for x, y in rng.integers(0, 250, (k, 2))]
    ts = pa.array(((start + rng.uniform(0, 299, k)) * 1e6).astype(np.int64)).cast(FLOW_SCHEMA.field("ts").type)
    table = conform(pa.table({"row": np.arange(first_row, first_row + k), "uid": [f"C{first_row + i}" for i in range(k)],
                              "ts": ts, "src_ip": src, "src_port": rng.integers(1024, 65535, k).astype(np.int32),
                              "dst_ip": dst, "dst_port": rng.choice([22, 80, 443, 3389], k).astype(np.int32),
                              "proto": ["tcp"] * k}), FLOW_SCHEMA)
    ws = SimpleNamespace(rows=np.arange(first_row, first_row + k), scores=rng.uniform(1.0, 4.0, k),
                         alerts=np.ones(k, dtype=bool), top_technique=[TECHS[i % len(TECHS)] for i in range(k)])
    win = SimpleNamespace(table=table, start=start, end=start + 300)
    return build_alerts(win, ws, model_version="bench", threshold=1.0, now=start + 305).alerts


def _shifted(a: dict, dt: float, tag: int) -> dict:
    """A copy of finding ``a`` moved ``dt`` seconds later with its own id (what the next windows would give)."""
    a = copy.deepcopy(a)
    u = a["unmapped"]
    u["window"] = {"start": u["window"]["start"] + dt, "end": u["window"]["end"] + dt}
    aid = alert_id(u["window"]["start"], f"{tag}/{a['finding_info']['uid']}", u["technique"])
    a["finding_info"]["uid"] = a["metadata"]["uid"] = aid
    for k in ("first_seen_time", "last_seen_time"):
        if isinstance(a["finding_info"].get(k), int):
            a["finding_info"][k] += int(dt * 1000)
    a["time"] += int(dt * 1000)
    return a


def fill(db: Path, n_alerts: int, per_window: int = 500, real_windows: int = 10, seed: int = 0) -> int:
    """``n_alerts`` findings: ``real_windows`` windows built by build_alerts, later windows as time-shifted copies
    of them (building each from records would take minutes on a shared machine and measure nothing new)."""
    rng = np.random.default_rng(seed)
    store = SQLiteAlertStore(db)
    t0, made, w = 1_700_000_000.0, 0, 0
    templates: list[list[dict]] = []
    while made < n_alerts:
        k = min(per_window, n_alerts - made)
        if w < real_windows:
            alerts = _window_alerts(rng, t0 + 300 * w, k, made, w)
            templates.append(alerts)
        else:
            base = templates[w % real_windows]
            alerts = [_shifted(a, 300.0 * (w - w % real_windows), w) for a in base[:k]]
        store.write(alerts)
        made += len(alerts)
        w += 1
    store.flush()
    store.close()
    return made


def _time(url: str, reps: int) -> dict:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        with urllib.request.urlopen(url, timeout=60) as r:
            r.read()
        times.append(time.perf_counter() - t)
    return {"best_ms": round(1000 * min(times), 1), "median_ms": round(1000 * statistics.median(times), 1),
            "first_ms": round(1000 * times[0], 1)}


def browser_render(url: str, reps: int) -> dict | None:
    if not CHROMIUM.exists():
        return None
    from playwright.sync_api import sync_playwright

    out = []
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            for _ in range(reps):
                pg = b.new_page()
                pg.goto(url)
                pg.wait_for_selector("#alerts tbody tr")
                out.append(pg.evaluate("() => performance.now()"))  # ms since this page's navigation start
                pg.close()
        finally:
            b.close()
    return {"best_ms": round(min(out), 1), "median_ms": round(statistics.median(out), 1), "first_ms": round(out[0], 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--alerts", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--out", default=str(REPO / "reports" / "ui_bench.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        db = Path(d) / "alerts.db"
        t = time.perf_counter()
        n = fill(db, args.alerts)
        fill_s = time.perf_counter() - t
        size = db.stat().st_size
        with UIServer(UIConfig(alerts=db, port=0)) as server:
            base = server.url + "api/alerts?limit=50"
            some_src = sqlite3.connect(db).execute("SELECT src_ip FROM alerts LIMIT 1 OFFSET 777").fetchone()[0]
            queries = {
                "first_page": "",
                "last_page": f"&offset={n - 50}",
                "severity_ge_3": "&severity=3",
                "technique": "&technique=T1046",
                "host": f"&host={some_src}",
                "status_new": "&status=new",
                "text": "&q=172.16.1.",
                "sort_score": "&sort=score",
                "exclude_technique": "&f=-technique:none",
                "group_rule": "&group=rule",
            }
            server_ms = {k: _time(base + v, args.reps) for k, v in queries.items()}
            render = browser_render(server.url, args.reps)
    try:
        from training.report_meta import report_meta

        meta = report_meta()
    except ImportError:  # pragma: no cover
        meta = {}
    report = {
        "benchmark": "ui_bench", "command": "python benchmarks/ui_bench.py " + " ".join(sys.argv[1:]),
        "alerts": n, "store_mb": round(size / 2**20, 1), "fill_seconds": round(fill_s, 1),
        "page_size": 50, "reps": args.reps, "server_ms": server_ms, "browser_first_page_ms": render,
        "sqlite": sqlite3.sqlite_version, **meta,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

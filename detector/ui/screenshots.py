"""Screenshots of the queue and of one alert page for the docs (docs/img/), taken in headless Chromium.

    .venv/bin/python -m detector.ui.screenshots --alerts out/demo/alerts.db --out docs/img

The alert shown is the one whose finding names the most destinations (the fullest subgraph without
an archive), or ``--alert ID``. Needs Playwright (the ``test`` extra) and /usr/bin/chromium.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import tempfile
from pathlib import Path

from detector.ui.config import UIConfig
from detector.ui.server import UIServer

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def pick_alert(db: Path) -> str:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        best, best_n = None, -1
        for aid, finding in con.execute("SELECT id, finding FROM alerts WHERE technique != 'none'"):
            u = json.loads(finding).get("unmapped") or {}
            n = len(u.get("top_destinations") or []) + len(u.get("top_sources") or [])
            if n > best_n:
                best, best_n = aid, n
        if best is None:
            best = con.execute("SELECT id FROM alerts LIMIT 1").fetchone()[0]
        return best
    finally:
        con.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--alerts", required=True)
    ap.add_argument("--archive")
    ap.add_argument("--alert")
    ap.add_argument("--out", default="docs/img")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    a = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        db = Path(d) / "alerts.db"  # a copy: the page adds indexes and a triage database beside it
        shutil.copyfile(a.alerts, db)
        aid = a.alert or pick_alert(db)
        cfg = UIConfig(alerts=db, archive=Path(a.archive) if a.archive else None, port=0)
        with UIServer(cfg) as server, sync_playwright() as pw:
            server.app.triage.apply(aid, {"action": "assign", "assignee": "ana"}, "ana")
            server.app.triage.apply(aid, {"action": "comment", "text": "scanner from the university range"}, "ana")
            b = pw.chromium.launch(executable_path=a.chromium, args=ARGS)
            pg = b.new_page(viewport={"width": 1280, "height": 820})
            pg.goto(server.url + "?severity=3")
            pg.wait_for_selector("#alerts tbody tr")
            pg.screenshot(path=str(out / "ui-queue.png"))
            pg.goto(server.url + f"alert?id={aid}")
            pg.wait_for_selector("body[data-loaded='1']")
            pg.wait_for_timeout(500)  # the layout settles
            pg.screenshot(path=str(out / "ui-alert.png"), full_page=True, clip={"x": 0, "y": 0, "width": 1280, "height": 1500})
            b.close()
    for f in ("ui-queue.png", "ui-alert.png"):
        print(f"{out / f}: {(out / f).stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`graphsentry ui` and `graphsentry ui export-verdicts` from the command line: exit codes and one-line errors."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from detector.ui.triage import TriageStore
from ingest.verdicts import read_verdicts

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("args, needle", [
    (["ui", "--alerts", "missing.db"], "alert store not found"),
    (["ui"], "give --alerts"),
    (["ui", "--alerts", "{db}", "--bind", "0.0.0.0:0"], "without an access token"),
    (["ui", "--alerts", "{db}", "--bind", "nonsense"], "HOST:PORT"),
    (["ui", "export-verdicts", "--alerts", "{db}", "--out", "{tmp}/v.csv"], "no triage database"),
])
def test_user_errors_exit_2_with_one_line(alert_store, args, needle, capsys, monkeypatch):
    from training.cli import main

    monkeypatch.delenv("GRAPHSENTRY_UI_TOKEN", raising=False)
    rc = main([a.format(db=alert_store.db, tmp=alert_store.tmp) for a in args])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_export_verdicts(alert_store, capsys):
    aid = alert_store.found["flows"][0]["finding_info"]["uid"]
    t = TriageStore(str(alert_store.db) + ".triage.db")
    t.apply(aid, {"action": "close", "verdict": "true_positive", "reason": "confirmed C2"}, "ana")
    t.close()
    out = alert_store.tmp / "verdicts.csv"
    from training.cli import main

    assert main(["ui", "export-verdicts", "--alerts", str(alert_store.db), "--out", str(out)]) == 0
    assert "1 verdicts written" in capsys.readouterr().out and read_verdicts(out).by_alert == {aid: "malicious"}


@pytest.mark.slow
def test_serves_then_stops_on_sigterm(alert_store):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = subprocess.Popen([sys.executable, "-m", "training.cli", "ui", "--alerts", str(alert_store.db),
                          "--bind", f"127.0.0.1:{port}"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/stamp", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                if time.time() > deadline or p.poll() is not None:
                    raise AssertionError(f"server did not come up: {p.stderr.read() if p.poll() is not None else ''}") from None
                time.sleep(0.3)
        p.terminate()
        assert p.wait(timeout=20) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()

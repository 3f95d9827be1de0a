"""The window stage bounds the records of the windows queued for scoring, so a scoring batch (the windows
taken from the queue together) holds at most the bound plus one window, whatever the backlog."""
from __future__ import annotations

import time

import pyarrow.parquet as pq

from daemon_helpers import FanoutScorer, make_flows
from detector.daemon import load_config, run_daemon


class _BatchRecorder(FanoutScorer):
    """FanoutScorer with ``score_windows`` (the daemon's batched path), slow enough for windows to queue."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.batches: list[list[int]] = []

        self._inside = False

    def score_windows(self, windows, return_exceptions=False):
        time.sleep(0.03)
        self.batches.append([w.num_rows for w in windows])
        self._inside = True
        try:
            return [self.score_window(w) for w in windows]
        finally:
            self._inside = False

    def score_window(self, window):
        if not self._inside:  # a batch of one window: the daemon calls score_window for it
            time.sleep(0.03)
            self.batches.append([window.num_rows])
        return super().score_window(window)


def _run(tmp_path, monkeypatch, bound: int | None):
    if bound is not None:
        monkeypatch.setattr("detector.daemon.ledger.SCORE_QUEUE_ROWS", bound)
    t = make_flows(n_benign=3000, n_scan=200, duration=240.0)
    pq.write_table(t, tmp_path / "flows.parquet")
    cfg = load_config(overrides={
        "source": {"paths": [str(tmp_path / "flows.parquet")]}, "window": {"size": 2.0, "lateness": 0.0},
        "alerts": {"sinks": [{"type": "sqlite", "path": str(tmp_path / f"alerts-{bound}.db")}]},
        "metrics": {"enabled": False}, "model": {"watch": False}}, env={})
    scorer = _BatchRecorder(threshold=30)
    s = run_daemon(cfg, scorer=scorer, install_signals=False)
    return t, s, scorer


def test_scoring_batches_hold_at_most_the_bound_plus_one_window(tmp_path, monkeypatch):
    t, s, scorer = _run(tmp_path, monkeypatch, 40)
    assert s.records_scored == t.num_rows and s.late == 0
    biggest = max(n for b in scorer.batches for n in b)
    assert max(sum(b) for b in scorer.batches) <= 40 + biggest
    assert sum(map(sum, scorer.batches)) == t.num_rows


def test_without_a_tight_bound_the_backlog_joins_bigger_batches(tmp_path, monkeypatch):
    # the same run with the default bound: the test above measures the bound, not the data
    t, s, scorer = _run(tmp_path, monkeypatch, None)
    assert s.records_scored == t.num_rows
    biggest = max(n for b in scorer.batches for n in b)
    assert max(sum(b) for b in scorer.batches) > 40 + biggest

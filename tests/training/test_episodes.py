"""Attack episodes (training/episodes.py): grouping and time to first alert on a table with known answers."""
from __future__ import annotations

import numpy as np

from training.episodes import episode_ids, episode_metrics

# ts, src, dst, label, flagged -- deliberately not in time order
ROWS = [
    (100.0, "A", "B", 1, True),    # (A,B) episode from t=0: first alert at 100 -> TTFA 100
    (0.0, "A", "B", 1, False),
    (3599.0, "A", "B", 1, False),  # still inside the first hour of (A,B)
    (3600.0, "A", "B", 1, False),  # one hour after the start: a new (A,B) episode, never flagged
    (50.0, "A", "C", 1, True),     # (A,C): flagged at once -> TTFA 0
    (10.0, "B", "A", 0, True),     # benign: no episode (a false positive, not a detection)
    (20.0, "A", "B", 2, True),     # background: no episode either
    (500.0, "C", "B", 1, True),    # (C,B) from t=200, first alert at 500 -> TTFA 300
    (200.0, "C", "B", 1, False),
    (4000.0, "C", "B", 1, True),   # (C,B) again after an hour: its own episode, flagged at once
]


def _cols():
    ts, src, dst, lab, flag = map(list, zip(*ROWS))
    return np.array(ts), np.array(src, object), np.array(dst, object), np.array(lab), np.array(flag)


def test_episode_ids_known_answer():
    ts, src, dst, lab, _ = _cols()
    ids = episode_ids(ts, src, dst, lab)
    # numbered by episode start time: (A,B)@0 -> 0, (A,C)@50 -> 1, (C,B)@200 -> 2, (A,B)@3600 -> 3, (C,B)@4000 -> 4
    assert ids.tolist() == [0, 0, 0, 3, 1, -1, -1, 2, 2, 4]


def test_episode_metrics_known_answer():
    ts, src, dst, lab, flag = _cols()
    m = episode_metrics(ts, src, dst, lab, flag)
    assert m["n_episodes"] == 5
    assert m["n_detected"] == 4
    assert m["episode_recall"] == 0.8
    # TTFA of the detected episodes: 100, 0, 300, 0 -> median 50
    assert m["ttfa_median_s"] == 50.0
    assert m["ttfa_max_s"] == 300.0


def test_horizon_is_a_parameter():
    ts, src, dst, lab, flag = _cols()
    m = episode_metrics(ts, src, dst, lab, flag, horizon=1e9)  # one episode per pair
    assert m["n_episodes"] == 3 and m["n_detected"] == 3


def test_no_attacks_and_none_flagged():
    ts, src, dst, lab, flag = _cols()
    m = episode_metrics(ts, src, dst, np.zeros_like(lab), flag)
    assert m["n_episodes"] == 0 and m["episode_recall"] is None and m["ttfa_median_s"] is None
    m = episode_metrics(ts, src, dst, lab, np.zeros_like(flag))
    assert m["n_episodes"] == 5 and m["n_detected"] == 0 and m["episode_recall"] == 0.0
    assert m["ttfa_median_s"] is None

"""Streaming scorer: window -> graph (+ knowledge block) -> STGNN -> detector -> scores and alerts.

One idea per module:

* :mod:`.records` - :class:`WindowScores` / :class:`FlowScores`, what scoring returns;
* :mod:`.behaviour` - the long-horizon behaviour side channel fed with every flow once;
* :mod:`.fusion` - the technique channel fused with the embedding detector's scores;
* :mod:`.stream` - :class:`StreamScorer`, one stream's temporal state, window by window;
* :mod:`.batch` - :func:`score_table` / :func:`score_batches`, whole inputs in input order;
* :mod:`.warm` - :func:`warm_up`, a loaded model's one-time costs paid before it serves.
"""
from __future__ import annotations

from detector.scoring.batch import score_batches, score_table, scores_schema
from detector.scoring.behaviour import _Behaviour, behaviour_top
from detector.scoring.records import FlowScores, WindowScores
from detector.scoring.stream import StreamScorer
from detector.scoring.warm import warm_up

__all__ = ["FlowScores", "StreamScorer", "WindowScores", "behaviour_top", "score_batches", "score_table",
           "scores_schema", "warm_up", "_Behaviour"]

"""Transaction (fraud) models and scoring: TMR-GGNN-style heterogeneous temporal GNN.

Public entry points: :class:`detector.fraud.bundle.FraudBundle` and :func:`score`.

One pipeline per stream kind, in the same three layers (a layer imports only the ones before it)::

    layer      flows                                    transactions (fraud)
    ingest     readers/, windows.py, graph.py           fraud/data.py, fraud/graph.py
    detector   layers/, models/, bundle.py, scoring/    fraud/conv.py, fraud/model.py, fraud/bundle.py,
                                                        fraud/scoring.py
    training   pretrain/, cli/                          fraud/loop.py, fraud/api.py, fraud/cli.py,
                                                        fraud/metrics.py, fraud/simulate.py
"""
from __future__ import annotations


def score(model_dir: str, inputs: list[str], out_parquet: str, **kw) -> dict:
    """Score transaction files; one row per input record (see :mod:`detector.fraud.scoring`)."""
    from detector.fraud.scoring import score as _score

    return _score(model_dir, inputs, out_parquet, **kw)

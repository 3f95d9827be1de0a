"""Transaction (fraud) training and evaluation: ``train``, ``evaluate`` (see :mod:`training.fraud.api`).

One pipeline per stream kind, in the same three layers (a layer imports only the ones before it)::

    layer      flows                                    transactions (fraud)
    ingest     readers/, windows.py, graph.py           fraud/data.py, fraud/graph.py
    detector   layers/, models/, bundle.py, scoring/    fraud/conv.py, fraud/model.py, fraud/bundle.py,
                                                        fraud/scoring.py
    training   pretrain/, cli/                          fraud/loop.py, fraud/api.py, fraud/cli.py,
                                                        fraud/metrics.py, fraud/simulate.py
"""
from __future__ import annotations


def train(inputs: list[str], out_dir: str, **kw) -> dict:
    """Train a FraudBundle; see :func:`training.fraud.api.train`."""
    from training.fraud.api import train as _train

    return _train(inputs, out_dir, **kw)


def evaluate(inputs: list[str], report_dir: str, **kw) -> dict:
    """Handbook-protocol evaluation with baselines; see :func:`training.fraud.api.evaluate`."""
    from training.fraud.api import evaluate as _evaluate

    return _evaluate(inputs, report_dir, **kw)

"""Transaction (fraud) models and scoring: TMR-GGNN-style heterogeneous temporal GNN.

Public entry points: :class:`detector.fraud.bundle.FraudBundle` and :func:`score`.
"""
from __future__ import annotations


def score(model_dir: str, inputs: list[str], out_parquet: str, **kw) -> dict:
    """Score transaction files; one row per input record (see :mod:`detector.fraud.scoring`)."""
    from detector.fraud.scoring import score as _score

    return _score(model_dir, inputs, out_parquet, **kw)

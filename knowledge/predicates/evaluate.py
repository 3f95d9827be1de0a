"""The vectorised evaluator: every predicate over one window (or several concatenated windows in one
call) into an activation matrix ``float32 [E, K]``.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from knowledge.predicates.context import WindowContext
from knowledge.predicates.registry import PREDICATE_NAMES, PREDICATES

__all__ = ["compute_predicates", "compute_predicates_many", "concat_windows"]


def compute_predicates(table: pa.Table | pa.RecordBatch, names: tuple[str, ...] | None = None) -> np.ndarray:
    """Edge activations ``float32 [E, len(names)]`` (all predicates by default), in ``names`` order."""
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    return _activations(table, None, names)


def _activations(table: pa.Table, sizes: np.ndarray | None, names: tuple[str, ...] | None) -> np.ndarray:
    names = PREDICATE_NAMES if names is None else tuple(names)
    if table.num_rows == 0:
        return np.zeros((0, len(names)), dtype=np.float32)
    ctx = WindowContext(table, sizes)
    # One predicate per row of a [K, E] array (contiguous writes), transposed once at the end.
    out = np.empty((len(names), table.num_rows), dtype=np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        for j, name in enumerate(names):
            out[j] = PREDICATES[name].fn(ctx)
    # NaN -> 0, -inf -> 0, +inf -> 1, then into [0, 1]: fmax/fmin skip NaN (nan_to_num + clip, in two passes)
    np.fmax(out, 0.0, out=out)
    np.fmin(out, 1.0, out=out)
    return np.ascontiguousarray(out.T)


def concat_windows(tables) -> tuple[pa.Table, np.ndarray]:
    """(one table of the windows' rows in order, rows per window); columns missing from some windows
    are null there (``_num``/``_dict`` treat a null like a missing column, so nothing changes)."""
    tables = [pa.Table.from_batches([t]) if isinstance(t, pa.RecordBatch) else t for t in tables]
    sizes = np.fromiter((t.num_rows for t in tables), dtype=np.int64, count=len(tables))
    live = [t for t in tables if t.num_rows]
    if not live:
        return (tables[0] if tables else pa.table({})), sizes
    try:
        table = pa.concat_tables(live)
    except pa.ArrowInvalid:  # different column sets or types: let Arrow promote (raises if it cannot)
        table = pa.concat_tables(live, promote_options="permissive")
    return table, sizes


def compute_predicates_many(tables, names: tuple[str, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Activations of several windows in one call: ``(float32 [sum E, len(names)], rows per window)``.

    Rows are the windows' rows in order; window ``i`` is rows ``off[i]:off[i+1]`` with
    ``off = [0, *cumsum(sizes)]``, and equals ``compute_predicates(tables[i], names)`` bit for bit
    (groups, distinct counts and rates never cross windows; ``tests/knowledge/test_predicates.py``).
    """
    table, sizes = concat_windows(tables)
    return _activations(table, sizes[sizes > 0], names), sizes

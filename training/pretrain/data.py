"""Training data preparation: records in event-time order, tumbling windows, the time-ordered train /
held-back split and the window graphs (:class:`Prepared`, shareable between runs).
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from detector.pipeline import FeaturePipeline, PipelineConfig, load_featurizer, preprocessor_class
from training.pretrain.config import TrainConfig

log = logging.getLogger(__name__)


def as_table(tables) -> pa.Table:
    """Concatenate tables/record batches into one table."""
    ts = [pa.Table.from_batches([t]) if isinstance(t, pa.RecordBatch) else t for t in tables]
    if not ts:
        raise ValueError("no input records")
    return pa.concat_tables(ts, promote_options="default") if len(ts) > 1 else ts[0]


def ts_seconds(table: pa.Table) -> np.ndarray:
    return table.column("ts").cast(pa.int64()).to_numpy().astype(np.float64) / 1e6


def fingerprint(table: pa.Table) -> dict:
    """Cheap, order-sensitive fingerprint of the training records (count, time span, content hash)."""
    h = hashlib.sha256()
    for c in ("ts", "src_ip", "dst_ip", "dst_port", "src_bytes"):
        if c in table.column_names:
            h.update(str(table.column(c).to_pylist()).encode())
    ts = ts_seconds(table)
    lab = table.column("label").to_numpy(zero_copy_only=False) if "label" in table.column_names else None
    return {"records": int(table.num_rows), "sha256": h.hexdigest(),
            "ts_min": float(ts.min()) if len(ts) else None, "ts_max": float(ts.max()) if len(ts) else None,
            "labelled_malicious": int(np.nansum(lab == 1)) if lab is not None else None}


def make_windows(table: pa.Table, size: float):
    """Tumbling windows over ``table`` in event-time order (each record in exactly one window)."""
    from ingest.windows import Tumbling, window_all

    if table.num_rows == 0:
        return []
    # Sorted by time, so with zero lateness nothing is late and every record lands in one window.
    srt = table.take(pc.sort_indices(table, sort_keys=[("ts", "ascending"), ("row", "ascending")]))
    windows, w = window_all(srt.to_batches(max_chunksize=65536), Tumbling(size), lateness=0.0)
    if w.stats.invalid:
        log.warning("%d records without a timestamp were left out of training", w.stats.invalid)
    return windows


def split_windows(windows: list, val_frac: float) -> tuple[list, list]:
    """Earliest windows for training, the latest ``val_frac`` (by flow count) held back."""
    if len(windows) < 2:
        raise ValueError(f"need at least 2 windows to hold some back for calibration, got {len(windows)}; "
                         "use a smaller --window or more data")
    sizes = np.array([w.table.num_rows for w in windows], dtype=np.float64)
    cum = np.cumsum(sizes) / sizes.sum()
    k = int(np.searchsorted(cum, 1.0 - val_frac)) + 1
    k = min(max(k, 1), len(windows) - 1)
    return windows[:k], windows[k:]


@dataclass
class Prepared:
    """Windows, fitted preprocessing and window graphs of one training set (shareable between runs
    that use the same window size, graph settings and knowledge flag)."""

    table: pa.Table
    records_in: int
    removed: int
    train_w: list
    val_w: list
    pipeline: FeaturePipeline
    graphs: list
    val_graphs: list                   # held-back windows, benign-only records (as trained)
    val_labels: np.ndarray | None = None  # [flows of val_graphs] label per flow (-1 unknown)
    # The whole training period again with every record (attacks included), from a fresh stream; None when
    # nothing was removed (then val_graphs already are the held-back period as scored).
    ctx_graphs: list | None = None
    ctx_labels: np.ndarray | None = None
    ctx_heldback: np.ndarray | None = None  # [flows of ctx_graphs] True inside the held-back period
    ctx_classes: np.ndarray | None = None   # [flows of ctx_graphs] attack class string (None when unnamed)

    def validation(self, context: bool) -> tuple[list, np.ndarray, np.ndarray, bool, np.ndarray | None]:
        """``(graphs, labels, held_back, continue_state, classes)`` for validation and calibration.

        ``context``: the training period with its attacks in the graph (fresh temporal state);
        otherwise the benign-only held-back windows (state continuing from the training windows).
        """
        if context and self.ctx_graphs is not None:
            return self.ctx_graphs, self.ctx_labels, self.ctx_heldback, False, self.ctx_classes
        lab = self.val_labels if self.val_labels is not None else np.full(
            sum(g.edge_index.size(1) for g in self.val_graphs), -1)
        return self.val_graphs, lab, np.ones(len(lab), bool), True, None


def prepare(tables, cfg: TrainConfig) -> Prepared:
    """Filter (``benign_only``), window, split in time, fit the preprocessor, build the graphs."""
    table = as_table(tables)
    full = table
    n_in = table.num_rows
    removed = 0
    if cfg.benign_only and "label" in table.column_names:
        keep = pc.fill_null(pc.not_equal(table.column("label"), 1), True)
        removed = n_in - int(pc.sum(keep).as_py() or 0)
        table = table.filter(keep)
    if table.num_rows < 10:
        raise ValueError(f"only {table.num_rows} training records after filtering; need at least 10")
    windows = make_windows(table, cfg.window)
    train_w, val_w = split_windows(windows, cfg.val_frac)
    train_tab = pa.concat_tables([w.table for w in train_w])
    pre = preprocessor_class(cfg.impl)().fit([train_tab])  # label-free, training windows only
    kf = load_featurizer(cfg.knowledge)
    pcfg = PipelineConfig(impl=cfg.impl, node_mode=cfg.node_mode, knowledge=kf is not None)
    pipeline = FeaturePipeline(pre, pcfg, kf)
    stream = pipeline.stream()
    # batched builds (same graphs as window by window); the same stream continues into validation (dt_prev)
    graphs = [d for d, _ in stream.build_all(train_w)]
    ctx_graphs = ctx_labels = ctx_heldback = ctx_classes = None
    if removed and cfg.val_context:
        # the training period as it would be scored: every record, attacks included, in the graph
        ctx_stream = pipeline.stream()
        ctx_graphs = [d for d, _ in ctx_stream.build_all(make_windows(full, cfg.window))]
        ctx_labels = _labels(ctx_graphs)
        ctx_heldback = np.concatenate([np.full(g.edge_index.size(1), float(g.window_start) >= val_w[0].start)
                                       for g in ctx_graphs])
        ctx_classes = _classes(ctx_graphs, full)
    val_graphs = [d for d, _ in stream.build_all(val_w)]
    return Prepared(table, n_in, removed, train_w, val_w, pipeline, graphs, val_graphs, _labels(val_graphs),
                    ctx_graphs, ctx_labels, ctx_heldback, ctx_classes)


def _classes(graphs: list, table: pa.Table) -> np.ndarray:
    """The ``attack`` string of every flow of ``graphs`` (object array; None where the input names none)."""
    n = sum(g.edge_index.size(1) for g in graphs)
    if "attack" not in table.column_names or n == 0:
        return np.full(n, None, dtype=object)
    rows = table.column("row").to_numpy().astype(np.int64)
    order = np.argsort(rows, kind="stable")
    attack = np.asarray(table.column("attack").to_pylist(), dtype=object)[order]
    edge_rows = np.concatenate([g.edge_row.numpy().astype(np.int64) for g in graphs])
    return attack[np.searchsorted(rows[order], edge_rows)]


def _labels(graphs: list) -> np.ndarray:
    out = [g.edge_label.numpy() if getattr(g, "edge_label", None) is not None
           else np.full(g.edge_index.size(1), -1) for g in graphs]
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)

"""What a retraining run reads from the archive, in bounded memory.

Two passes over the archive (:func:`ingest.archive.read_archive`, one record batch at a time):

1. :func:`count_windows` reads only the ``ts`` column and counts the records of each time window
   (memory: one counter per window of the range, not per record);
2. :func:`plan_sample` cuts the range in time (the latest ``holdout_frac`` of the records, cut on a
   window boundary) and, for each side, chooses the **blocks** (``sample_block`` of event time, one
   hour by default) it keeps: all of them when the side holds at most its cap (``max_train_records``,
   ``max_holdout_records``), else blocks spread evenly over the side's time range, whole, until the cap
   (a time-stratified sample of whole windows: the graphs the model learns from have the density the
   daemon sees, which thinning records would not keep);
3. :func:`read_sample` reads the archive again and keeps the records of the chosen blocks, with the
   analysts' verdicts joined (:mod:`ingest.verdicts`).

Peak memory follows the caps, not the archive: ``benchmarks/retrain_bench.py`` measures it
(``reports/retrain_memory.json``).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SCORE_COLUMNS = ("score", "alert", "alert_id", "model_version")


def ts_seconds(table: pa.Table | pa.RecordBatch) -> np.ndarray:
    """Event times in epoch seconds (float)."""
    return table.column("ts").cast(pa.int64()).to_numpy(zero_copy_only=False).astype(np.float64) / 1e6


def _check_archive(archive: str) -> None:
    if not Path(archive).is_dir():
        raise FileNotFoundError(f"--archive {archive}: no such directory (write one with graphsentry archive "
                                f"or the daemon's archive sink)")


def count_windows(archive: str, since: Any, until: Any, window_s: float, now: float | None = None):
    """``(window ids, record counts, scan)`` of the archive's records in ``[since, until)``: window id
    ``floor(ts / window_s)``, ids ascending; reads the ``ts`` column batch by batch."""
    from ingest.archive import read_archive

    _check_archive(archive)
    ids = np.empty(0, np.int64)
    counts = np.empty(0, np.int64)
    scan = read_archive(archive, since, until, columns=["ts"], now=now)
    for b in scan:
        w = np.floor(ts_seconds(b) / window_s).astype(np.int64)
        u, c = np.unique(w, return_counts=True)
        ids, inv = np.unique(np.concatenate([ids, u]), return_inverse=True)
        merged = np.zeros(len(ids), np.int64)
        np.add.at(merged, inv, np.concatenate([counts, c]))
        counts = merged
    return ids, counts, scan


def choose_blocks(blocks: np.ndarray, counts: np.ndarray, cap: int) -> np.ndarray:
    """The blocks kept (a boolean per block, blocks in time order) so that at most ``cap`` records are kept,
    spread evenly over the blocks: a block is kept when it fits under the cap and the records kept so far
    are at or behind the pro-rata share at the block's middle, ``cap x (records before it + half its own) /
    total``."""
    total = int(counts.sum())
    keep = np.zeros(len(blocks), bool)
    if total <= cap:
        keep[:] = True
        return keep
    kept, seen = 0, 0
    for i, c in enumerate(counts.tolist()):
        seen += c
        if kept + c <= cap and kept <= cap * (seen - c / 2) / total:
            keep[i] = True
            kept += c
    return keep


@dataclass
class SamplePlan:
    """Where the run cuts the range and which blocks of each side it reads."""

    window_s: float
    block_s: float
    cut: float                                  # epoch seconds: training before, held out from here on
    records_in_range: int
    windows_in_range: int
    sides: dict[str, dict] = field(default_factory=dict)   # "train"/"holdout": blocks, kept mask, counts

    def keep(self, side: str, blocks: np.ndarray) -> np.ndarray:
        s = self.sides[side]
        return np.isin(blocks, s["blocks"][s["kept"]])

    def hours(self, side: str) -> float:
        """Hours of event time the side's kept blocks cover (for alerts per hour)."""
        s = self.sides[side]
        return float(s["covered_s"][s["kept"]].sum()) / 3600.0

    def to_dict(self) -> dict:
        out = {"window_seconds": self.window_s, "block_seconds": self.block_s, "records_in_range": self.records_in_range,
               "windows_in_range": self.windows_in_range}
        for side, s in self.sides.items():
            kept = s["kept"]
            out[side] = {"records": int(s["counts"].sum()), "kept_records": int(s["counts"][kept].sum()),
                         "blocks": int(len(kept)), "kept_blocks": int(kept.sum()), "cap": s["cap"],
                         "sampled": bool(not kept.all())}
        return out


def plan_sample(ids: np.ndarray, counts: np.ndarray, window_s: float, holdout_frac: float, max_train: int,
                max_holdout: int, block_s: float, range_end: float | None = None) -> SamplePlan:
    """Cut the windows in time and choose each side's blocks (:func:`choose_blocks`)."""
    n = int(counts.sum())
    if len(ids) < 2:
        raise ValueError(f"the archive range holds {n} records in {len(ids)} window(s) of {window_s:g} s: a "
                         f"training part and a later held-out part need at least two windows (widen --since)")
    cum = np.cumsum(counts)
    k = min(max(int(n * (1 - holdout_frac)), 1), n - 1)      # the first held-out record, by count
    j = int(np.searchsorted(cum, k, side="right"))           # the window holding it
    j = min(max(j, 1), len(ids) - 1)                          # both sides keep at least one window
    cut = float(ids[j] * window_s)
    starts = ids.astype(np.float64) * window_s
    end = float(range_end) if range_end is not None else float(starts[-1] + window_s)
    plan = SamplePlan(window_s, block_s, cut, n, len(ids))
    for side, sel, cap in (("train", slice(0, j), max_train), ("holdout", slice(j, None), max_holdout)):
        b = np.floor(starts[sel] / block_s).astype(np.int64)
        blocks, inv = np.unique(b, return_inverse=True)
        bc = np.zeros(len(blocks), np.int64)
        np.add.at(bc, inv, counts[sel])
        lo = np.maximum(blocks * block_s, starts[0] if side == "train" else cut)
        hi = np.minimum((blocks + 1) * block_s, cut if side == "train" else max(end, cut + window_s))
        kept = choose_blocks(blocks, bc, cap)
        if not kept.any():
            raise ValueError(f"every {block_s:g}-second block of the {side} part holds more than its cap of {cap} "
                             f"records: raise max_{side}_records or shorten sample_block")
        plan.sides[side] = {"blocks": blocks, "counts": bc, "kept": kept, "cap": int(cap),
                            "covered_s": np.maximum(hi - lo, 0.0)}
    return plan


def _sorted(batches: list, schema: pa.Schema) -> pa.Table:
    t = pa.Table.from_batches(batches, schema=schema) if batches else schema.empty_table()
    t = t.take(pc.sort_indices(t, sort_keys=[("ts", "ascending")]))
    return t.set_column(t.schema.get_field_index("row"), "row", pa.array(np.arange(t.num_rows), pa.int64()))


def read_sample(archive: str, since: Any, until: Any, verdicts: str | None, plan: SamplePlan,
                now: float | None = None) -> tuple[pa.Table, pa.Table, dict]:
    """``(training part, held-out part, info)``: the records of the plan's kept blocks, each part sorted by
    ``ts`` with a ``verdict`` column; memory holds the kept records and one batch."""
    from ingest.archive import read_archive
    from ingest.schema import FLOW_SCHEMA
    from ingest.verdicts import apply_verdicts, read_verdicts

    cols = list(FLOW_SCHEMA.names) + list(SCORE_COLUMNS)
    scan = read_archive(archive, since, until, columns=cols, now=now)
    vd = read_verdicts(verdicts) if verdicts else {}
    parts: dict[str, list] = {"train": [], "holdout": []}
    schema = None
    for b in apply_verdicts(scan, vd):
        schema = b.schema
        ts = ts_seconds(b)
        blocks = np.floor(np.floor(ts / plan.window_s) * plan.window_s / plan.block_s).astype(np.int64)
        later = ts >= plan.cut
        for side, on in (("train", ~later), ("holdout", later)):
            m = on & plan.keep(side, blocks)
            if m.any():
                parts[side].append(b.filter(pa.array(m)))
    if schema is None:
        raise ValueError(f"no readable archived records in {archive}")
    train, holdout = _sorted(parts["train"], schema), _sorted(parts["holdout"], schema)
    info = {"bad_files": [list(map(str, x)) for x in scan.bad_files], "verdicts": verdicts,
            "verdict_count": len(getattr(vd, "by_alert", vd))}
    return train, holdout, info


def read_recent(archive: str, since: Any, until: Any, verdicts: str | None, *, window_s: float, holdout_frac: float,
                max_train: int, max_holdout: int, block_s: float, now: float | None = None,
                say: Callable[[str], None] = lambda _m: None) -> tuple[pa.Table, pa.Table, SamplePlan, dict]:
    """Both passes: ``(training part, held-out part, plan, data info)``."""
    from ingest.archive import parse_time

    ids, counts, _scan = count_windows(archive, since, until, window_s, now)
    n = int(counts.sum())
    if n == 0:
        raise ValueError(f"no archived records in {archive} between {since or 'the start'} and {until or 'now'}: "
                         f"nothing to retrain on (widen --since)")
    u = parse_time(until, now)
    plan = plan_sample(ids, counts, window_s, holdout_frac, max_train, max_holdout, block_s,
                       None if u is None else min(u.timestamp(), float((ids[-1] + 1) * window_s)))
    p = plan.to_dict()
    say(f"archive: {n} records in {len(ids)} windows; training part {p['train']['records']} "
        f"(reading {p['train']['kept_records']}), held out {p['holdout']['records']} "
        f"(reading {p['holdout']['kept_records']})"
        + ("; sampled by whole blocks" if p["train"]["sampled"] or p["holdout"]["sampled"] else ""))
    train, holdout, info = read_sample(archive, since, until, verdicts, plan, now)
    info = {"archive": str(Path(archive).resolve()), "since": since, "until": until, "records_in_range": n,
            "records_read": train.num_rows + holdout.num_rows, "sample": p, **info}
    return train, holdout, plan, info


def labels_of(table: pa.Table) -> np.ndarray:
    """1 malicious, 0 benign, -1 unknown: the record's label where it has one (2 = background: unknown),
    else its alert's verdict (malicious 1, benign 0)."""
    out = np.full(table.num_rows, -1, dtype=np.int64)
    if "label" in table.column_names:
        lab = _float(table.column("label"))
        out[lab == 1] = 1
        out[lab == 0] = 0
    if "verdict" in table.column_names:
        v = np.asarray(table.column("verdict").to_pylist(), dtype=object)
        unk = out == -1
        out[unk & (v == "malicious")] = 1
        out[unk & (v == "benign")] = 0
    return out


def _float(col) -> np.ndarray:
    """A numeric column as float64 with NaN for nulls."""
    return np.asarray(pc.fill_null(col.cast(pa.float64()), math.nan).to_numpy(zero_copy_only=False), np.float64)


def training_selection(table: pa.Table) -> tuple[pa.Table, dict]:
    """The training part with what may not be learnt as normal marked ``label = 1``: records the champion
    alerted on (unless cleared: verdict benign), verdict malicious, label 1. ``train_bundle`` with
    ``benign_only`` then leaves them out of what it fits but keeps them in the graph of the held-back
    windows it calibrates on, as the daemon will see them (fitted on benign-only graphs, the threshold is
    far too low for traffic that has attacks in it)."""
    n = table.num_rows
    alert = np.asarray(pc.fill_null(table.column("alert"), False).to_numpy(zero_copy_only=False), dtype=bool)
    verdict = np.asarray(table.column("verdict").to_pylist(), dtype=object)
    lab = _float(table.column("label"))
    malicious = (verdict == "malicious") | (lab == 1)
    cleared = verdict == "benign"
    alerted = alert & ~cleared & ~malicious
    keep = ~(malicious | alerted)
    info = {"records": n, "excluded_alerted_by_champion": int(alerted.sum()),
            "excluded_malicious": int(malicious.sum()), "kept_cleared_false_positives": int((alert & cleared).sum()),
            "kept": int(keep.sum())}
    lab_new = np.where(keep, lab, 1.0)
    col = pa.array(lab_new, pa.int8(), mask=np.isnan(lab_new))
    return table.set_column(table.schema.get_field_index("label"), "label", col), info


__all__ = ["SamplePlan", "choose_blocks", "count_windows", "labels_of", "plan_sample", "read_recent", "read_sample",
           "training_selection", "ts_seconds"]

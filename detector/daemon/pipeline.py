"""The detection daemon: source -> windows -> graphs+model -> alerts, with bounded queues.

Threads and queues::

    source thread ──q_in (bounded)──> window thread ──q_win (bounded)──> score thread ──> sinks
    (KafkaSource / file tail)          EventTimeWindower                  scorer.score_window,
                                                                          build_alerts, flush,
                                                                          mark rows durable

* Backpressure: ``q_in`` and ``q_win`` are bounded; a full ``q_win`` blocks the window thread,
  which lets ``q_in`` fill, which makes the Kafka source pause its partitions.
* Delivery: every record gets a daemon-local row number; a record is *done* once the window it
  landed in was scored and every required sink flushed (or once it was found late/invalid and
  counted). Kafka offsets are committed only up to the first record that is not done.
* Behaviour state (``pipeline.behaviour_state_dir``): the scorer's long-horizon state is checkpointed with the
  source positions it covers, at clean instants (every record before them done, none after), at most
  every ``pipeline.behaviour_checkpoint_interval`` seconds and at shutdown; Kafka offsets are then committed only up
  to the newest checkpoint's positions. A restart loads the checkpoint whose positions are where the source
  resumed, so re-read records are counted once (docs/daemon-operations.md, "Behaviour state across restarts").
* Archive (``archive`` section; docs/archive.md): every scored record of a batch of windows is written with
  its score, alert, alert id, model version and exact source position to an
  :class:`ingest.archive.ArchiveWriter`, flushed before any of those records is marked done (so before
  their offsets are committed); a failing flush is retried like a required alert sink. A restart re-reads
  the uncommitted records and the writer drops those already archived: each record is archived once.
* Hot reload: a watcher thread loads a changed model directory beside the running one; the score
  thread swaps it in between two windows, so each window is scored by exactly one model.
* Shutdown (SIGTERM/SIGINT or a finite source's end): stop reading, drain the queues, score the
  windows already closed, flush sinks, commit, return a :class:`DaemonSummary`. With a Kafka
  source the still-open windows are *not* scored at SIGTERM: their offsets stay uncommitted and a
  restart re-reads them whole (no half windows). A finite file source flushes them.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from detector.alerts import make_sink
from detector.alerts.sinks import AlertSink
from detector.metrics import Metrics, MetricsServer
from ingest.archive import fsync_dir
from ingest.kafka_io import OffsetTracker, StoppedWaiting

log = logging.getLogger(__name__)


@dataclass
class DaemonSummary:
    """What one run of the daemon did (returned by :func:`run_daemon`)."""

    records_in: int = 0
    records_scored: int = 0
    malformed: dict = field(default_factory=dict)
    late: int = 0
    invalid: int = 0
    windows_scored: int = 0
    alerts: int = 0
    flagged_records: int = 0
    alerts_by_severity: dict = field(default_factory=dict)
    alerts_by_technique: dict = field(default_factory=dict)
    model_version: str = ""
    model_reloads: int = 0
    committed: dict = field(default_factory=dict)
    sinks: list = field(default_factory=list)
    metrics_url: str | None = None
    duration_s: float = 0.0
    stopped_by: str = ""
    event_to_alert_p50_s: float | None = None
    event_to_alert_p99_s: float | None = None
    archived: int = 0              # records written durably to the archive (archive section)
    archive_duplicates: int = 0    # records the archive already held (re-read after a restart), not written again

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        """A short human summary (``make run`` prints it)."""
        lines = [
            f"records read {self.records_in}, scored {self.records_scored}, late {self.late}, "
            f"malformed {sum(self.malformed.values())} {dict(self.malformed) or ''}".rstrip(),
            f"windows scored {self.windows_scored}; {self.flagged_records} flagged records -> "
            f"{self.alerts} alerts (after aggregation per source and technique)",
        ]
        if self.alerts_by_severity:
            lines.append("by severity: " + ", ".join(f"{k} {v}" for k, v in sorted(self.alerts_by_severity.items())))
        if self.alerts_by_technique:
            top = sorted(self.alerts_by_technique.items(), key=lambda kv: -kv[1])[:8]
            lines.append("by technique: " + ", ".join(f"{k} {v}" for k, v in top))
        lines.append(f"model {self.model_version} ({self.model_reloads} reloads); {self.duration_s:.1f} s; "
                     f"stopped by {self.stopped_by}")
        for s in self.sinks:
            lines.append(f"alerts in: {s}")
        if self.archived or self.archive_duplicates:
            lines.append(f"archived {self.archived} scored records ({self.archive_duplicates} already in the archive)")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# model loading and watching


def resolve_model_dir(path: str | os.PathLike) -> Path:
    """A model directory from ``path``: a bundle dir, a symlink to one, or a pointer file.

    A pointer file (e.g. ``models/current``) holds one line: the model directory, absolute or
    relative to the pointer's folder. Promotion writes a new pointer atomically (rename).
    """
    p = Path(path)
    if p.is_file():
        target = p.read_text().strip()
        t = Path(target)
        return (t if t.is_absolute() else p.parent / t).resolve()
    return p.resolve()


def registry_alias(path: str | os.PathLike) -> str:
    """The registry alias ``path`` follows (``champion``, ``challenger``, ``previous``) when it is one of a
    model registry's alias symlinks (``REGISTRY/champion -> versions/v0002``, training/registry.py); else ""."""
    from detector.model_files import REGISTRY_ALIASES as ALIASES
    p = Path(path)
    try:
        if p.name in ALIASES and p.is_symlink() and (p.parent / "versions").is_dir():
            return p.name
    except OSError:
        pass
    return ""


def model_fingerprint(path: str | os.PathLike) -> str:
    """Changes when the pointer moves or the bundle's config.json is rewritten."""
    d = resolve_model_dir(path)
    cfg = d / "config.json"
    try:
        st = cfg.stat()
        return f"{d}|{st.st_mtime_ns}|{st.st_size}"
    except FileNotFoundError:
        return f"{d}|missing"


@dataclass
class LoadedModel:
    scorer: Any
    version: str
    threshold: float | None
    path: str
    explain: Callable | None = None
    window: dict | None = None  # the window size/lateness the model was trained with
    target_fpr: float | None = None  # the benign FPR its threshold was calibrated for


def default_loader(path: str | os.PathLike) -> LoadedModel:
    """Load a ModelBundle directory (or pointer) and make a fresh stream scorer."""
    from detector.bundle import load_bundle

    d = resolve_model_dir(path)
    bundle = load_bundle(d)
    if hasattr(bundle, "warm_up"):
        bundle.warm_up()  # one-time detector costs here (a hot reload runs in the watcher thread), not in a window
    cfg_bytes = (d / "config.json").read_bytes()
    cfg = json.loads(cfg_bytes)
    version = str(cfg.get("version") or f"{d.name}-{hashlib.sha1(cfg_bytes).hexdigest()[:8]}")
    thr = getattr(bundle, "threshold", None)
    fpr = getattr(getattr(bundle, "calibration", None), "target_fpr", None)
    return LoadedModel(bundle.stream_scorer(), version, float(thr) if thr is not None else None, str(d),
                       window=getattr(bundle, "window", None), target_fpr=float(fpr) if fpr is not None else None)


def plugin_loader(spec: str) -> Callable[[str], LoadedModel]:
    """``"package.module:function"`` -> that function (``model.loader`` in the config)."""
    import importlib

    mod, _, fn = spec.partition(":")
    if not mod or not fn:
        raise ValueError(f"model.loader={spec!r}: expected 'module:function'")
    return getattr(importlib.import_module(mod), fn)


def scorer_model(scorer: Any, version: str = "injected", threshold: float | None = None,
                 target_fpr: float | None = None) -> LoadedModel:
    """Wrap an already-built stream scorer (dependency injection for tests, embedding, benchmarks)."""
    if threshold is None:
        for name in ("threshold", "threshold_"):
            v = getattr(scorer, name, None)
            if isinstance(v, (int, float)):
                threshold = float(v)
                break
    return LoadedModel(scorer, version, threshold, "", target_fpr=target_fpr)


def _loaded_fingerprint(loaded: str | None, path: str) -> str:
    """The fingerprint of the directory a model was loaded from (``path``'s when unknown or unreadable)."""
    if loaded:
        try:
            return model_fingerprint(loaded)
        except Exception:  # noqa: BLE001 - a plugin loader's path need not be a model directory
            pass
    return model_fingerprint(path)


class ModelWatcher:
    """Polls the model path; loads a changed model in its own thread and offers it for a swap."""

    def __init__(self, path: str, loader: Callable[[str], LoadedModel], interval: float, metrics: Metrics,
                 loaded: str | None = None) -> None:
        """``loaded``: the directory the running model was loaded from; its fingerprint is the reference, so a
        pointer (a registry's ``champion``) moved while that model was loading is still seen as a change."""
        self.path, self.loader, self.interval, self.metrics = path, loader, interval, metrics
        self._fp = _loaded_fingerprint(loaded, path)
        self._pending: LoadedModel | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, name="model-watch", daemon=True)

    def start(self) -> "ModelWatcher":
        self._t.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def take(self) -> LoadedModel | None:
        with self._lock:
            m, self._pending = self._pending, None
            return m

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            fp = model_fingerprint(self.path)
            if fp == self._fp:
                continue
            try:
                m = self.loader(self.path)
            except Exception as exc:  # noqa: BLE001 - a broken new model must not stop the old one
                log.error("model reload from %s failed (%s); keeping the current model", self.path, exc,
                          extra={"event": "model_reload_failed", "path": str(self.path)})
                self.metrics.model_reloads.labels("failed").inc()
                self._fp = fp  # do not retry the same broken directory every interval
                continue
            self._fp = _loaded_fingerprint(m.path, self.path)  # what was loaded (the pointer may have moved again)
            with self._lock:
                self._pending = m
            log.info("new model %s loaded from %s; swapping at the next window boundary", m.version, m.path,
                     extra={"event": "model_reload_loaded", "model_version": m.version})


# ------------------------------------------------------------------------------------------
# row bookkeeping


class RowLedger:
    """Daemon-local row ranges -> the input's own row numbers, arrival times and (when given) source
    positions, until done."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._starts: list[int] = []
        self._chunks: list[list] = []  # [start, ref_rows ndarray, arrival, remaining, positions or None]
        self.next_row = 0

    def add(self, ref_rows: np.ndarray, arrival: float, positions: tuple | None = None) -> int:
        """Register ``len(ref_rows)`` new rows; returns the first one's daemon-local number. ``positions``:
        ``(topic, partition, offsets, indexes)``, the rows' source positions (one offset and index per row)."""
        with self._lock:
            start = self.next_row
            n = len(ref_rows)
            self.next_row += n
            if n:
                self._starts.append(start)
                self._chunks.append([start, np.asarray(ref_rows, dtype=np.int64), arrival, n, positions])
            return start

    def positions(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(topic, partition, offset, index, known)`` of daemon-local ``rows``; ``known`` False where the
        rows' chunk came without positions (topic None, offset -1 there)."""
        rows = np.asarray(rows, dtype=np.int64)
        n = len(rows)
        topic = np.full(n, None, dtype=object)
        part = np.zeros(n, dtype=np.int64)
        off = np.full(n, -1, dtype=np.int64)
        idx = np.zeros(n, dtype=np.int64)
        known = np.zeros(n, dtype=bool)
        with self._lock:
            starts = np.asarray(self._starts, dtype=np.int64)
            ci = np.searchsorted(starts, rows, side="right") - 1
            for j in np.unique(ci):
                if j < 0:
                    continue
                c = self._chunks[j]
                if c[4] is None:
                    continue
                t, p, offs, ids = c[4]
                m = np.flatnonzero(ci == j)
                o = rows[m] - c[0]
                ok = (o >= 0) & (o < len(offs))
                sel, o = m[ok], o[ok]
                topic[sel], part[sel] = t, int(p)
                off[sel], idx[sel] = offs[o], ids[o]
                known[sel] = True
        return topic, part, off, idx, known

    def lookup(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ref rows, arrival times) for daemon-local ``rows``."""
        rows = np.asarray(rows, dtype=np.int64)
        with self._lock:
            starts = np.asarray(self._starts, dtype=np.int64)
            idx = np.searchsorted(starts, rows, side="right") - 1
            ref = np.full(len(rows), -1, dtype=np.int64)
            arr = np.full(len(rows), np.nan)
            for j in np.unique(idx):
                if j < 0:
                    continue
                c = self._chunks[j]
                m = idx == j
                off = rows[m] - c[0]
                ok = off < len(c[1])
                ref[np.flatnonzero(m)[ok]] = c[1][off[ok]]
                arr[m] = c[2]
            return ref, arr

    def done(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return
        with self._lock:
            if not self._chunks:
                return
            idx = np.searchsorted(np.asarray(self._starts, dtype=np.int64), rows, side="right") - 1
            counts = np.bincount(idx[idx >= 0], minlength=len(self._chunks))
            ks, kc = [], []
            for s, c, n in zip(self._starts, self._chunks, counts):
                c[3] -= int(n)
                if c[3] > 0:
                    ks.append(s)
                    kc.append(c)
            self._starts, self._chunks = ks, kc

    def pending(self) -> int:
        with self._lock:
            return sum(c[3] for c in self._chunks)


# ------------------------------------------------------------------------------------------
# the daemon


class PartitionMerger:
    """Merge Kafka partitions on event time before windowing (per-partition watermarks).

    Each partition is ordered by event time on its own, but a consumer reads partitions in
    bursts: all of partition 0's backlog, then partition 1's. Pushed as they come, partition 1
    would be "late" against partition 0's watermark. So records wait here until every known
    partition has reached their timestamp (the minimum of the partitions' newest event times,
    as Flink does), then go to the windower in event-time order. A record waits at most
    ``idle_after`` wall seconds for slow or silent partitions; more than ``max_rows`` waiting
    releases the oldest anyway (such records may then be late, and are counted so).
    """

    def __init__(self, idle_after: float = 10.0, max_rows: int = 200_000,
                 clock: Callable[[], float] = time.monotonic,
                 assigned: Callable[[], set[int]] | None = None) -> None:
        self.idle_after, self.max_rows, self.clock = idle_after, max_rows, clock
        self.assigned = assigned or (lambda: set())
        self._buf: list[pa.Table] = []
        self._ts: list[np.ndarray] = []
        self._arr: list[np.ndarray] = []
        self._max_ts: dict[int, int] = {}
        self.buffered = 0

    def add(self, partition: int, t: pa.Table) -> None:
        ts = t.column("ts").cast(pa.int64()).to_numpy(zero_copy_only=False)
        self._buf.append(t)
        self._ts.append(ts)
        self._arr.append(np.full(len(ts), self.clock()))
        self.buffered += t.num_rows
        self._max_ts[partition] = max(self._max_ts.get(partition, int(ts.max())), int(ts.max()))

    def release(self, everything: bool = False) -> pa.Table | None:
        if not self._buf:
            return None
        now = self.clock()
        parts = set(self._max_ts) | set(self.assigned())
        # A partition we have not heard from yet holds everything back (up to idle_after).
        cut = min(self._max_ts.get(p, -(1 << 62)) for p in parts)
        allts = np.concatenate(self._ts)
        allarr = np.concatenate(self._arr)
        if everything:
            take = np.ones(len(allts), dtype=bool)
        else:
            take = (allts <= cut) | (allarr <= now - self.idle_after)
            if self.buffered - int(take.sum()) > self.max_rows:
                over = np.sort(allts[~take])[self.buffered - int(take.sum()) - self.max_rows]
                take |= allts <= over
        if not take.any():
            return None
        # Whatever is released, everything older than it goes too (keeps the output time-ordered).
        take |= allts <= allts[take].max()
        table = pa.concat_tables(self._buf) if len(self._buf) > 1 else self._buf[0]
        keep = ~take
        out_idx = np.flatnonzero(take)
        out_idx = out_idx[np.argsort(allts[out_idx], kind="stable")]
        out = table.take(pa.array(out_idx))
        if keep.any():
            self._buf = [table.filter(pa.array(keep))]
            self._ts, self._arr = [allts[keep]], [allarr[keep]]
        else:
            self._buf, self._ts, self._arr = [], [], []
        self.buffered = int(keep.sum())
        return out


def _file_dead_letter(path: str | None, metrics: Metrics):
    """The readers' DeadLetter (they require that type), also counting into our metrics."""
    from ingest.deadletter import DeadLetter

    class _Counting(DeadLetter):  # the base class logs the first few of each reason
        def add(self, source: str, line: Any, reason: str, raw: Any) -> None:
            metrics.malformed.labels(reason).inc()
            metrics.dead_letter.labels(reason).inc()
            super().add(source, line, reason, raw)

    return _Counting(path)


# ------------------------------------------------------------------------------------------
# long-horizon behaviour state, checkpointed with the source positions it covers


class DoneFrontier:
    """Per input stream (a Kafka partition ``"topic/partition"``, or ``"file"``), where the done records end.

    The window stage registers every chunk it gets (daemon-local rows ``start .. start+n`` and the source
    positions ``first .. last`` they came from); the pipeline marks rows done. A stream's *position* is the
    source position of its first record not done: what a restart resumes from once it is committed. A
    chunk whose rows map one to one onto its positions (``n == last - first + 1``: JSON messages without
    a gap or a bad one; every file chunk) is followed record by record; any other chunk as a whole (its
    position stays at its first offset until every row of it is done).

    :meth:`snapshot` also says whether the done records of every stream are exactly those before its
    position (*clean*: nothing done beyond it). Only then does a behaviour state that holds the scored
    records match the positions: a restart re-reads from them precisely the records the state has not
    seen. Scoring windows in event-time order keeps it clean as long as each stream is in event-time order.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._starts: list[int] = []          # row start of each open segment with rows (ascending)
        self._segs: list[list] = []           # those segments
        self._by_key: dict[str, list[list]] = {}   # key -> its open segments, in order
        self._base: dict[str, int] = {}       # key -> position after its last finished segment
        self.first: dict[str, int] = {}       # key -> the first position registered by this process

    # a segment: [key, row_start, n, first, last, exact, done mask, n_done]
    def add(self, key: str, row_start: int, n: int, first: int, last: int) -> None:
        n, first, last = int(n), int(first), int(last)
        seg = [key, int(row_start), n, first, last, n == last - first + 1, np.zeros(n, dtype=bool), 0]
        with self._lock:
            self.first.setdefault(key, first)
            self._by_key.setdefault(key, []).append(seg)
            if n:
                self._starts.append(int(row_start))
                self._segs.append(seg)
            self._settle(key)

    def done(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return
        with self._lock:
            if not self._segs:
                return
            idx = np.searchsorted(np.asarray(self._starts, dtype=np.int64), rows, side="right") - 1
            touched = set()
            for j in np.unique(idx[idx >= 0]):
                seg = self._segs[j]
                off = rows[idx == j] - seg[1]
                off = off[(off >= 0) & (off < seg[2])]
                if off.size:
                    seg[6][off] = True
                    seg[7] = int(seg[6].sum())
                    touched.add(seg[0])
            if not touched:
                return
            keep = [(s, g) for s, g in zip(self._starts, self._segs) if g[7] < g[2]]
            self._starts = [s for s, _ in keep]
            self._segs = [g for _, g in keep]
            for key in touched:
                self._settle(key)

    def _settle(self, key: str) -> None:
        segs = self._by_key.get(key, [])
        k = 0
        while k < len(segs) and segs[k][7] >= segs[k][2]:
            self._base[key] = segs[k][4] + 1
            k += 1
        if k:
            del segs[:k]

    def _position(self, key: str) -> tuple[int | None, bool]:
        segs = self._by_key.get(key) or []
        if not segs:
            return self._base.get(key), True
        s = segs[0]
        clean = all(g[7] == 0 for g in segs[1:])
        if s[5]:
            i = int(np.argmin(s[6]))  # the first row not done (a segment held here has one)
            clean = clean and not bool(s[6][i:].any())
            return s[3] + i, clean
        return s[3], clean and s[7] == 0

    def firsts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.first)

    def snapshot(self) -> tuple[dict[str, int], bool]:
        """``(positions, clean)`` at one instant."""
        with self._lock:
            out, clean = {}, True
            for key in set(self._by_key) | set(self._base):
                pos, ok = self._position(key)
                clean = clean and ok
                if pos is not None:
                    out[key] = int(pos)
            return out, clean

    def forget(self, keys) -> None:
        with self._lock:
            keys = set(keys)
            keep = [(s, g) for s, g in zip(self._starts, self._segs) if g[0] not in keys]
            self._starts = [s for s, _ in keep]
            self._segs = [g for _, g in keep]
            for k in keys:
                self._by_key.pop(k, None)
                self._base.pop(k, None)

    def pending(self) -> int:
        with self._lock:
            return sum(g[2] - g[7] for g in self._segs)


class GatedOffsets(OffsetTracker):
    """The Kafka source's offset tracker when the behaviour state is checkpointed: record-level positions
    from a :class:`DoneFrontier`, and commits held to ``gate``, the positions the newest behaviour
    checkpoint covers (so a committed offset never runs ahead of the saved state; ``gate`` None: commit
    what is done, as the plain tracker does). The daemon marks rows done on the frontier itself."""

    def __init__(self, frontier: DoneFrontier) -> None:
        super().__init__()
        self.frontier = frontier
        self.gate: dict[str, int] | None = {}

    @staticmethod
    def key(topic: str, partition: int) -> str:
        return f"{topic}/{partition}"

    def add(self, topic: str, partition: int, first: int, last: int, row_start: int, row_end: int) -> None:
        self.frontier.add(self.key(topic, partition), row_start, row_end - row_start, first, last)

    def done_rows(self, rows: np.ndarray) -> None:
        pass  # Daemon._mark_done marks the frontier

    def committable(self) -> dict[tuple[str, int], int]:
        gate = self.gate
        pos = self.frontier.snapshot()[0] if gate is None else gate
        out = {}
        for key, off in pos.items():
            topic, _, p = key.rpartition("/")
            if topic and p.isdigit():
                out[(topic, int(p))] = int(off)
        return out

    def forget(self, tps) -> None:
        keys = {self.key(t, p) for t, p in tps}
        self.frontier.forget(keys)
        gate = self.gate
        if gate is not None:
            self.gate = {k: v for k, v in gate.items() if k not in keys}

    def pending(self) -> int:
        return self.frontier.pending()


def _behaviour_params_json(scorer: Any) -> dict | None:
    """The behaviour parameters ``scorer`` runs (or would run) its state with, as JSON; None when off."""
    if not getattr(scorer, "behaviour_enabled", False) or not hasattr(scorer, "restore_behaviour"):
        return None
    st = getattr(scorer, "behaviour", None)
    if st is not None:
        return st.params.to_json()
    from ingest.behaviour import BehaviourParams

    p = getattr(scorer, "behaviour_params", None)
    if isinstance(p, dict):
        p = BehaviourParams.from_json(p)
    return (p if isinstance(p, BehaviourParams) else BehaviourParams()).to_json()


class BehaviourCheckpoints:
    """Behaviour-state checkpoints in one directory: ``behaviour-<seq>/`` holds the state
    (``BehaviourState.save``: ``behaviour.json`` + ``behaviour.npz``) and ``checkpoint.json`` (the source
    positions the state covers, the source, the state's ``flows_seen``). A checkpoint is written into a
    hidden temporary directory, fsynced, and renamed into place: a crash leaves whole checkpoints only.
    The newest ``keep`` are kept (a crash between a save and the offset commit that follows it resumes
    from the one before, whose positions were committed)."""

    PREFIX = "behaviour-"
    VERSION = 1

    def __init__(self, directory: str | os.PathLike, keep: int = 3) -> None:
        self.dir = Path(directory)
        self.keep = max(1, int(keep))
        self._seq: int | None = None

    def _all(self) -> list[tuple[int, Path]]:
        out = []
        try:
            entries = list(self.dir.iterdir())
        except OSError:
            return []
        for p in entries:
            if p.name.startswith(self.PREFIX) and p.is_dir():
                try:
                    out.append((int(p.name[len(self.PREFIX):]), p))
                except ValueError:
                    continue
        return sorted(out, reverse=True)

    def candidates(self) -> list[tuple[Path, dict | Exception]]:
        """Newest first: ``(path, checkpoint.json's dict)``, or the exception reading it raised."""
        out: list = []
        for _seq, p in self._all():
            try:
                meta = json.loads((p / "checkpoint.json").read_text())
                if not isinstance(meta, dict) or meta.get("version") != self.VERSION \
                        or not isinstance(meta.get("positions"), dict):
                    raise ValueError("not a behaviour checkpoint of this version")
                out.append((p, meta))
            except (OSError, ValueError) as exc:
                out.append((p, exc))
        return out

    @staticmethod
    def load(path: Path, meta: dict):
        from ingest.behaviour import BehaviourState

        state = BehaviourState.load(path)
        if int(state.flows_seen) != int(meta.get("flows_seen", -1)):
            raise ValueError(f"state holds {state.flows_seen} flows, checkpoint.json says {meta.get('flows_seen')}")
        return state

    def save(self, state: Any, positions: dict[str, int], source: dict, model_version: str) -> Path:
        import shutil

        self.dir.mkdir(parents=True, exist_ok=True)
        if self._seq is None:
            have = self._all()
            self._seq = have[0][0] if have else 0
            for p in self.dir.glob("." + self.PREFIX + "*.tmp"):  # left by a crash mid-save
                shutil.rmtree(p, ignore_errors=True)
        self._seq += 1
        name = f"{self.PREFIX}{self._seq:012d}"
        tmp = self.dir / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        state.save(tmp)
        meta = {"version": self.VERSION, "positions": dict(positions), "source": source,
                "flows_seen": int(state.flows_seen), "keys": state.sizes(), "model_version": model_version,
                "saved_at": time.time()}
        with open(tmp / "checkpoint.json", "w") as f:
            f.write(json.dumps(meta, indent=1))
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(tmp)
        os.replace(tmp, self.dir / name)
        fsync_dir(self.dir)
        for _seq, p in self._all()[self.keep:]:
            shutil.rmtree(p, ignore_errors=True)
        return self.dir / name


class Daemon:
    """One daemon instance; :meth:`run` blocks until a stop signal or the end of a finite source."""

    def __init__(
        self, config: dict, model: LoadedModel | None = None,
        loader: Callable[[str], LoadedModel] | None = None, sinks: list[AlertSink] | None = None,
        metrics: Metrics | None = None, install_signals: bool = True,
    ) -> None:
        self.cfg = config
        self.metrics = metrics or Metrics()
        spec = (config.get("model") or {}).get("loader")
        self.loader = loader or (plugin_loader(spec) if spec else default_loader)
        self._model = model
        self._extra_sinks = sinks
        self.install_signals = install_signals
        self.stop_event = threading.Event()
        self.stopped_by = ""
        self.ledger = RowLedger()
        self.tracker = None
        self.source = None
        self.summary = DaemonSummary()
        self._ready = threading.Event()
        self._errors: list[BaseException] = []
        self._flagged = 0
        self.health = None  # BrokerHealth when a Kafka client is in play
        p = config.get("pipeline") or {}
        from detector.fit_check import FitWindow

        # pipeline.fit_check_records: records the running fit check looks back over (0 turns it off)
        self._fit = FitWindow(size=int(_opt(p, "fit_check_records", 10_000) or 0) or 1,
                              min_records=int(_opt(p, "fit_check_min_records", 2000)))
        self._fit_enabled = int(_opt(p, "fit_check_records", 10_000) or 0) > 0
        self._fit_warned_at: float | None = None
        self._late_logged_at = 0.0
        from collections import deque

        self.e2a_samples: deque = deque(maxlen=100_000)  # raw event-to-alert latencies (summary, benchmarks)
        # grace-period calibration (docs/calibration.md): the deployed threshold is daemon state
        self._cal = None                          # detector.grace.GraceCalibrator, or None (off)
        self._cal_reset = threading.Event()       # set by SIGHUP / reset_calibration(); applied between windows
        self._cal_saved_at = 0.0
        self._cal_dirty = False
        self._cal_force = False                   # save at the next window whatever the time (grace just ended)
        # long-horizon behaviour state checkpoints (pipeline.behaviour_state_dir; docs/daemon-operations.md)
        self._beh_store: BehaviourCheckpoints | None = None
        self._frontier: DoneFrontier | None = None    # record-level done positions per stream (checkpoints on)
        self._beh_resumed = False                     # the resume decision was taken (before the first window)
        self._beh_unverified: dict[str, int] = {}     # restored positions of streams not read yet
        self._beh_saved_at = time.monotonic()
        self._beh_last: tuple | None = None           # (positions, flows_seen) of the newest checkpoint
        self._beh_unclean_since: float | None = None
        self._beh_fed_undone = False                  # a scored window was not written: no checkpoint now
        self._beh_state = None                        # the state the eviction counter follows
        self._beh_evicted: dict[str, int] = {}
        # the retraining archive (archive section; docs/archive.md, docs/daemon-operations.md "Archive")
        a = config.get("archive") or {}
        self._archive_on = bool(a.get("enabled")) and bool(a.get("path"))
        self._archive = None                          # ingest.archive.ArchiveWriter, (re)opened on demand
        self._archive_seen: dict[str, int] = {}       # the open writer's counters already in the metrics
        self._alert_id_warned = False
        self._model_alias = ""

    # -- control -------------------------------------------------------------------------
    def stop(self, reason: str = "stop()") -> None:
        if not self.stop_event.is_set():
            self.stopped_by = reason
            log.info("stopping (%s): draining", reason)
        self.stop_event.set()

    def reset_calibration(self) -> None:
        """Forget the deployed threshold and start a new grace period (SIGHUP does this); applied by the
        scoring thread before its next window, which also removes ``calibration.state_path``."""
        self._cal_reset.set()

    @property
    def ready(self) -> bool:
        """Reading and scoring: the source is set up (Kafka: partitions assigned), no stop requested,
        and no Kafka client waits for its broker."""
        return (self._ready.is_set() and not self.stop_event.is_set()
                and (self.health is None or self.health.is_up))

    def _kafka_in_play(self) -> bool:
        from detector.alerts.sinks import KafkaAlertSink

        return (self.cfg["source"]["type"] == "kafka"
                or any(s.get("type") == "kafka" for s in self.cfg["alerts"]["sinks"] if self._extra_sinks is None)
                or any(isinstance(s, KafkaAlertSink) for s in (self._extra_sinks or [])))

    def _backoff_cap(self) -> float:
        return float(_opt(self.cfg.get("kafka") or {}, "retry_backoff_max_s", 30.0))

    # -- setup ---------------------------------------------------------------------------
    def _make_sinks(self) -> list[AlertSink]:
        if self._extra_sinks is not None:
            return list(self._extra_sinks)
        from ingest.kafka_io import retry_kafka

        out = []
        for spec in self.cfg["alerts"]["sinks"]:
            if spec.get("type") == "kafka":  # the broker may not be there yet: wait for it
                out.append(retry_kafka(lambda spec=spec: make_sink(spec, self.cfg["kafka"]), self.health,
                                       "alert sink", spec.get("topic", "graphsentry-alerts"), self.stop_event,
                                       cap=self._backoff_cap(), bootstrap=spec.get("bootstrap")))
            else:
                out.append(make_sink(spec, self.cfg["kafka"]))
        return out

    def _make_windower(self):
        from ingest.windows import EventTimeWindower, Tumbling

        w = self.cfg["window"]
        idle = w.get("idle_timeout")
        return EventTimeWindower(Tumbling(float(w["size"])), lateness=float(w["lateness"]),
                                 idle_timeout=float(idle) if idle else None)

    # -- stages --------------------------------------------------------------------------
    def _file_source(self, q_in: "queue.Queue") -> threading.Thread:
        from ingest.kafka_io import SourceBatch
        from ingest.tail import TailSource

        s = self.cfg["source"]
        self._file_dl = _file_dead_letter(self.cfg["pipeline"].get("dead_letter_path"), self.metrics)
        reading_stop = threading.Event()
        self._file_stop = reading_stop
        src = TailSource(s["paths"], format=s["format"], follow=bool(s["follow"]),
                         poll_interval=float(s["poll_interval"]), dead_letter=self._file_dl, stop=reading_stop)
        max_records = self.cfg["pipeline"].get("max_records")

        def run() -> None:
            n = 0
            try:
                for t in src:
                    self.metrics.records.labels("file").inc(t.num_rows)
                    item = SourceBatch(t, "file", time.time())
                    while True:  # bounded put that still notices a stop
                        try:
                            q_in.put(item, timeout=0.2)
                            break
                        except queue.Full:
                            if reading_stop.is_set():
                                return
                    n += t.num_rows
                    if max_records and n >= int(max_records):
                        break
            except BaseException as exc:  # noqa: BLE001
                log.exception("file source failed")
                self._errors.append(exc)
            finally:
                try:  # end-of-stream marker; the window thread drains the queue, so this frees up
                    q_in.put(None, timeout=30)
                except queue.Full:
                    log.error("window stage not draining; end-of-stream marker dropped")

        t = threading.Thread(target=run, name="file-source", daemon=True)
        t.start()
        return t

    def _kafka_source(self, q_in: "queue.Queue"):
        from kafka.errors import TopicAuthorizationFailedError

        from ingest.kafka_io import (KafkaDeadLetter, OffsetTracker, ensure_topics, make_producer, retry_kafka,
                                     source_class)

        k = self.cfg["kafka"]
        cls = source_class(k.get("backend"))
        self.tracker = GatedOffsets(self._frontier) if self._frontier is not None else OffsetTracker()
        dl = None
        cap = self._backoff_cap()
        if k.get("dead_letter_topic"):
            dlt = k["dead_letter_topic"]

            def create() -> None:
                try:
                    ensure_topics(k["bootstrap"], {dlt: 1}, k)
                except TopicAuthorizationFailedError as exc:  # not ours to create: the producer may still send
                    log.warning("may not create dead-letter topic %s (%s); sending to it anyway", dlt, exc)

            retry_kafka(create, self.health, "dead-letter topic", dlt, self.stop_event, cap=cap)
            dl = retry_kafka(lambda: KafkaDeadLetter(make_producer(k), dlt, bootstrap=k["bootstrap"],
                                                     on_add=lambda r: self.metrics.dead_letter.labels(r).inc()),
                             self.health, "dead-letter producer", dlt, self.stop_event, cap=cap)
        self._kafka_dl = dl
        src = cls(k, q_in, self.tracker, self.metrics, dl, kind=self.cfg["source"]["kind"],
                  fmt=k["format"], stop_at_end=bool(k.get("stop_at_end")),
                  commit_interval=float(k.get("commit_interval", 1.0)),
                  on_assign=self._ready.set, health=self.health, backoff_cap=cap)
        self.source = src
        return src.start()

    def _window_stage(self, q_in: "queue.Queue", q_win: "queue.Queue", drain_open: bool) -> None:
        windower = self._make_windower()
        self.windower = windower
        m = self.metrics

        def handle_side_outputs() -> None:
            late = windower.drain_late()
            for b in late:
                m.late.inc(b.num_rows)
                self.summary.late += b.num_rows
                self._mark_done(b.column("row").to_numpy())
            if late and time.monotonic() - self._late_logged_at >= 60.0:  # at most one line a minute
                self._late_logged_at = time.monotonic()
                log.warning("%d records arrived after their window closed (late, not scored; %d so far); "
                            "raise window.lateness if this persists", sum(b.num_rows for b in late),
                            self.summary.late, extra={"event": "late_records", "late_total": self.summary.late})
            if windower.invalid:
                inv, windower.invalid = windower.invalid, []
                for b in inv:
                    m.malformed.labels("null_ts").inc(b.num_rows)
                    self.summary.invalid += b.num_rows
                    self._mark_done(b.column("row").to_numpy())

        def emit(windows: list) -> None:
            for w in windows:
                q_win.put(w)  # blocks when scoring falls behind: the backpressure chain starts here
                m.queue_depth.labels("windows").set(q_win.qsize())

        quiet_since = time.monotonic()  # when the last chunk came in
        merger = PartitionMerger(idle_after=float(self.cfg["pipeline"].get("partition_idle") or 10.0),
                                 max_rows=int(self.cfg["pipeline"].get("merge_max_rows") or 200_000),
                                 assigned=lambda: {p for _t, p in (self.source.assigned if self.source else ())})
        while True:
            try:
                item = q_in.get(timeout=0.2)
            except queue.Empty:
                item = _IDLE
            m.queue_depth.labels("records").set(q_in.qsize())
            if item is None:
                break
            if item is _IDLE:
                if self.stop_event.is_set() and self.source is None and not self._file_thread.is_alive():
                    break
                released = merger.release()  # a partition may have gone idle: release what waits on it
                if released is not None:
                    emit(windower.push(released))
                    handle_side_outputs()
                if merger.buffered == 0:
                    emit(windower.poll())
                    emit(self._quiet_watermark(windower, quiet_since))
                continue
            t: pa.Table = item.table
            n = t.num_rows
            quiet_since = time.monotonic()
            ref = t.column("row").to_numpy(zero_copy_only=False).astype(np.int64)
            start = self.ledger.add(ref, item.arrival, self._positions_of(item, ref) if self._archive_on else None)
            if self.tracker is not None and item.partition is not None:
                self.tracker.add(item.topic, item.partition, item.first_offset, item.last_offset, start, start + n)
            elif self._frontier is not None:  # the file source: its position is the records read before
                self._frontier.add("file", start, n, start, start + n - 1)
            self.summary.records_in += n
            if n == 0:
                continue
            t = t.set_column(t.schema.get_field_index("row"), "row",
                             pa.array(np.arange(start, start + n, dtype=np.int64)))
            single = self.source is not None and len(self.source.assigned) <= 1 and merger.buffered == 0
            if item.partition is None or single:
                # One stream (a file, or one partition): arrival order is the order to judge lateness by.
                emit(windower.push(t))
            else:
                merger.add(item.partition, t)
                released = merger.release()
                if released is not None:
                    emit(windower.push(released))
            handle_side_outputs()
        rest = merger.release(everything=True)
        if rest is not None and (drain_open or not self.stop_event.is_set()):
            emit(windower.push(rest))
            handle_side_outputs()
        # A finite source that ended by itself (file end, Kafka stop_at_end) scores its open windows;
        # a Kafka source stopped by a signal leaves them uncommitted for the restart to re-read.
        if drain_open or not self.stop_event.is_set():
            emit(windower.flush())
        handle_side_outputs()
        q_win.put(None)

    #: a stream is live when its newest event time is within this many seconds of the wall clock
    LIVE_SKEW = 30.0

    def _quiet_watermark(self, windower: Any, quiet_since: float) -> list:
        """Windows a quiet *live* stream has closed: while no record comes, its event time is taken to go on
        with the wall clock from the newest record, so the last window of a burst closes at its end plus the
        lateness, as it would with records flowing, not ``window.idle_timeout`` later. A backlog (event times
        older than :data:`LIVE_SKEW`) is left to the idle timeout: a pause there says nothing about event time."""
        newest = windower.max_event_time
        if newest is None or abs(time.time() - newest) > self.LIVE_SKEW:
            return []
        quiet = time.monotonic() - quiet_since
        lateness = float(self.cfg["window"]["lateness"] or 0.0)
        if quiet <= lateness:
            return []
        return windower.advance_watermark(newest + quiet - lateness)

    def _file_topic(self) -> str:
        """The archive's ``kafka_topic`` of a file source's records: ``file:`` and the source paths (absolute,
        joined by ``,``); their ``kafka_offset`` is the record's row in the source (continuous across its
        inputs, in read order), as ``graphsentry archive --from-files`` numbers the rows of one file."""
        if getattr(self, "_file_topic_cached", None) is None:
            paths = [str(Path(p).resolve()) for p in self.cfg["source"].get("paths") or []]
            self._file_topic_cached = "file:" + ",".join(paths)
        return self._file_topic_cached

    def _positions_of(self, item: Any, ref: np.ndarray) -> tuple | None:
        """``(topic, partition, offsets, indexes)`` of a source batch's records (None: unknown)."""
        n = len(ref)
        if item.partition is None:  # the file source
            return (self._file_topic(), 0, ref, np.zeros(n, dtype=np.int64))
        offs, idx = getattr(item, "offsets", None), getattr(item, "indexes", None)
        if offs is None or idx is None or len(offs) != n:
            from ingest.archive import chunk_positions

            exact = chunk_positions(n, item.first_offset, item.last_offset) if item.first_offset is not None else None
            if exact is None:
                log.warning("%d records of %s/%s (offsets %s..%s) came without their positions: archived without "
                            "one (never deduplicated)", n, item.topic, item.partition, item.first_offset,
                            item.last_offset)
                return None
            offs, idx = exact
        return (item.topic, int(item.partition), np.asarray(offs, dtype=np.int64), np.asarray(idx, dtype=np.int64))

    def _mark_done(self, rows: np.ndarray) -> None:
        self.ledger.done(rows)
        if self._frontier is not None:
            self._frontier.done(rows)
        if self.tracker is not None:
            self.tracker.done_rows(rows)

    def _score_stage(self, q_win: "queue.Queue", sinks: list[AlertSink], watcher: ModelWatcher | None) -> None:
        m = self.metrics
        model = self._model
        while True:
            w = q_win.get()
            if w is None:
                return
            # Take every window already queued (they closed together): a scorer with
            # ``score_windows`` builds their graphs and runs its detector once for all of them.
            batch, last = [w], False
            while len(batch) < self.MAX_SCORE_BATCH:
                try:
                    nxt = q_win.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    last = True
                    break
                batch.append(nxt)
            m.queue_depth.labels("windows").set(q_win.qsize())
            if watcher is not None:
                new = watcher.take()
                if new is not None:  # between windows: this window and later ones use the new model
                    log.info("model swap %s -> %s", model.version, new.version,
                             extra={"event": "model_swapped", "model_version": new.version, "previous": model.version})
                    self._carry_behaviour(model, new)
                    model = self._model = new
                    self._fit.reset()
                    self._fit_warned_at = None
                    m.set_model(new.version, new.path, new.target_fpr, self._model_alias)
                    self._setup_calibration(new)  # another model: its own grace period (or its saved state)
                    m.model_reloads.labels("ok").inc()
                    self.summary.model_reloads += 1
            self._apply_reset(model)
            if not self._beh_resumed:
                self._resume_behaviour(model)
            t0 = time.perf_counter()
            results = self._score_batch(model.scorer, batch)
            per_window = (time.perf_counter() - t0) / len(batch)
            if self._archive_on and self._cal is None:
                # the archive first, flushed once for the batch: before any of its records is marked done
                prepared = [self._prepare_window(w, ws, model, per_window) for w, ws in zip(batch, results)]
                archived = self._archive_windows(prepared, model)
                for p in prepared:
                    self._emit_window(p, model, sinks, archived)
            else:  # window by window (a calibrator saves its state after each window written: in step)
                for w, ws in zip(batch, results):
                    p = self._prepare_window(w, ws, model, per_window)
                    archived = self._archive_windows([p], model) if self._archive_on else True
                    self._emit_window(p, model, sinks, archived)
            self._behaviour_metrics(model)
            if self._beh_unverified:
                self._verify_late_streams()
            self._checkpoint_behaviour(model)
            if last:
                return

    # Windows scored in one call at most (bounds the latency of the first window of a backlog).
    MAX_SCORE_BATCH = 64

    @staticmethod
    def _score_batch(scorer: Any, batch: list) -> list:
        """Scores (or the exception) of each window, in order; batched when the scorer can."""
        if len(batch) > 1 and hasattr(scorer, "score_windows"):
            try:
                return list(scorer.score_windows(batch, return_exceptions=True))
            except Exception:  # noqa: BLE001 - fall back to one window at a time
                log.exception("batched scoring failed; scoring the %d windows one by one", len(batch))
        out: list = []
        for w in batch:
            try:
                out.append(scorer.score_window(w))
            except Exception as exc:  # noqa: BLE001
                out.append(exc)
        return out

    # -- calibration (deployed threshold) ------------------------------------------------------
    def _calibration_cfg(self) -> dict:
        return self.cfg.get("calibration") or {}

    def _new_calibrator(self, model: Any):
        from detector.grace import GraceCalibrator

        c = self._calibration_cfg()
        if model.threshold is None:
            raise ValueError("calibration.grace is set but the model has no threshold to start from")
        target = c.get("target_fpr") if c.get("target_fpr") is not None else model.target_fpr
        if target is None:
            raise ValueError("calibration.grace is set but the model has no calibrated target FPR: "
                             "set calibration.target_fpr")
        return GraceCalibrator(float(model.threshold), float(target), grace_seconds=float(c["grace"]),
                               method=c.get("method", "robust"), max_shift=c.get("max_shift", 50.0),
                               drift_rate=float(c.get("drift_rate", 0.5)))

    def _setup_calibration(self, model: Any, resume: bool = True) -> None:
        """The calibrator for ``model``: resumed from ``state_path`` when it holds this model's state, else a
        new grace period. Sets the threshold gauges."""
        c = self._calibration_cfg()
        self._cal = None
        if c.get("grace") is not None:
            path = c.get("state_path")
            if resume and path and Path(path).exists():
                try:
                    st = json.loads(Path(path).read_text())
                    from detector.grace import GraceCalibrator

                    if st.get("model_version") == model.version and st.get("trained_threshold") == model.threshold:
                        self._cal = GraceCalibrator.from_state(st["calibrator"])
                        log.info("calibration resumed from %s: deployed threshold %.6g (%s)", path,
                                 self._cal.threshold_, "in grace" if self._cal.in_grace_ else "calibrated",
                                 extra={"event": "calibration_resumed", "threshold": self._cal.threshold_})
                    else:
                        log.info("calibration state %s belongs to model %s, not %s: new grace period", path,
                                 st.get("model_version"), model.version)
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    log.warning("calibration state %s unreadable (%s): new grace period", path, exc)
            if self._cal is None:
                self._cal = self._new_calibrator(model)
                self._cal_dirty = self._cal_force = True
                log.info("calibration: grace period of %.0f s of event time starts (%s, trained threshold %.6g)",
                         float(c["grace"]), self._cal.method, self._cal.trained_threshold,
                         extra={"event": "grace_started"})
        self._set_threshold_gauges(model)

    def _set_threshold_gauges(self, model: Any) -> None:
        m = self.metrics
        if model.threshold is not None:
            m.threshold.labels("trained").set(float(model.threshold))
        dep = self._cal.threshold_ if self._cal is not None else model.threshold
        if dep is not None:
            m.threshold.labels("deployed").set(float(dep))

    def _save_calibration(self, model: Any, force: bool = False) -> None:
        """Write the calibration state to ``state_path`` atomically (tmp + fsync + rename); at most every 5 s
        unless ``force``."""
        path = self._calibration_cfg().get("state_path")
        if self._cal is None or not path or not self._cal_dirty:
            return
        now = time.monotonic()
        if not force and now - self._cal_saved_at < 5.0:
            return
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"model_version": model.version, "trained_threshold": model.threshold,
                           "saved_at": time.time(), "calibrator": self._cal.state()})
        tmp = p.with_name(p.name + ".tmp")
        with open(tmp, "w") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
        self._cal_saved_at, self._cal_dirty, self._cal_force = now, False, False

    def _apply_reset(self, model: Any) -> None:
        if not self._cal_reset.is_set():
            return
        self._cal_reset.clear()
        path = self._calibration_cfg().get("state_path")
        if path:
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
        if self._calibration_cfg().get("grace") is None:
            log.info("calibration reset requested but calibration.grace is off")
            return
        log.info("calibration reset: new grace period", extra={"event": "calibration_reset"})
        self._setup_calibration(model, resume=False)

    def _calibrate(self, w: Any, ws: Any) -> Any:
        """``ws`` with its alerts decided by the deployed threshold (grace records: the trained one); the
        window then feeds the calibrator. The bundle and the scorer are not changed."""
        import copy

        from detector.grace import flow_entities

        table = w.table
        rows = np.asarray(ws.rows, dtype=np.int64)
        tab_rows = table.column("row").to_numpy(zero_copy_only=False).astype(np.int64)
        pos = np.clip(np.searchsorted(tab_rows, rows), 0, max(len(tab_rows) - 1, 0))
        ents = flow_entities(table)[pos] if len(tab_rows) else np.zeros(0, dtype=object)
        ts = (table.column("ts").cast(pa.int64()).to_numpy(zero_copy_only=False).astype(np.float64) / 1e6)[pos] \
            if len(tab_rows) else np.zeros(0)
        was_grace = self._cal.in_grace_
        alerts = self._cal.process(np.asarray(ws.scores, dtype=np.float64), ents, ts)
        out = copy.copy(ws)
        out.alerts = alerts
        out.threshold = float(self._cal.threshold_)
        self._cal_dirty = True
        if was_grace and not self._cal.in_grace_:
            self._cal_force = True
            g = self._cal.summary()
            log.info("grace period over: deployed threshold %.6g (trained %.6g; %d records, %d kept, trimmed %s)",
                     self._cal.threshold_, self._cal.trained_threshold, g["grace_records"], g["kept"],
                     ", ".join(g["trimmed_entities"]) or "none",
                     extra={"event": "threshold_deployed", "threshold": self._cal.threshold_})
            if self._cal.undersized_ and self._cal.method != "trained":
                log.warning("the grace period kept only %d records: a %g target needs about %d for a stable "
                            "threshold (raise calibration.grace)", self._cal.n_kept_, self._cal.target_fpr,
                            int(np.ceil(10 / self._cal.target_fpr)))
        return out

    # -- long-horizon behaviour state (checkpointed with the positions it covers) -----------------------
    def _behaviour_cfg(self) -> dict:
        """``pipeline.behaviour_*`` as ``{state_dir, checkpoint_interval, keep}``."""
        p = self.cfg.get("pipeline") or {}
        return {"state_dir": p.get("behaviour_state_dir"),
                "checkpoint_interval": _opt(p, "behaviour_checkpoint_interval", 30.0),
                "keep": _opt(p, "behaviour_checkpoints_kept", 3)}

    def _source_id(self) -> dict:
        """What the checkpoint's positions are positions in (a checkpoint of another source never loads)."""
        if self.cfg["source"]["type"] == "kafka":
            k = self.cfg["kafka"]
            return {"type": "kafka", "topic": k["topic"], "group_id": k.get("group_id")}
        return {"type": "file", "paths": [str(p) for p in self.cfg["source"].get("paths") or []]}

    def _setup_behaviour_store(self, model: Any) -> None:
        """Checkpoints on when ``pipeline.behaviour_state_dir`` is set and the model's scorer keeps a
        behaviour state."""
        d = self._behaviour_cfg().get("state_dir")
        if not d:
            return
        if _behaviour_params_json(model.scorer) is None:
            log.info("pipeline.behaviour_state_dir is set but model %s scores without a behaviour state: nothing to "
                     "checkpoint", model.version)
            return
        self._beh_store = BehaviourCheckpoints(d, keep=int(_opt(self._behaviour_cfg(), "keep", 3)))
        self._frontier = DoneFrontier()

    def _resume_behaviour(self, model: Any) -> None:
        """Before the first window: continue from the newest checkpoint whose positions are where the source
        resumed (the first position read of every stream read so far), its source and its parameters
        this scorer's; else a fresh state (a warning says why)."""
        self._beh_resumed = True
        store = self._beh_store
        if store is None:
            return
        params = _behaviour_params_json(model.scorer)
        if params is None:
            return
        seen = self._frontier.firsts()
        source = self._source_id()
        why: list[str] = []
        cands = store.candidates()
        for path, meta in cands:
            if isinstance(meta, Exception):
                why.append(f"{path.name}: unreadable ({meta})")
                continue
            pos = {str(k): int(v) for k, v in meta["positions"].items()}
            if meta.get("source") != source:
                why.append(f"{path.name}: written for source {meta.get('source')}, not {source}")
                continue
            off = {k: (pos[k], seen[k]) for k in pos.keys() & seen.keys() if pos[k] != seen[k]}
            if off:
                k, (have, got) = sorted(off.items())[0]
                hint = " (a file source reads its files from the start)" if k == "file" else ""
                why.append(f"{path.name}: covers {k} up to {have}, but the source resumed at {got}{hint}")
                continue
            try:
                state = store.load(path, meta)
            except Exception as exc:  # noqa: BLE001 - a damaged checkpoint must not stop the daemon
                why.append(f"{path.name}: unreadable ({type(exc).__name__}: {exc})")
                continue
            if state.params.to_json() != params:
                why.append(f"{path.name}: saved with other behaviour parameters than model {model.version}'s")
                continue
            model.scorer.restore_behaviour(state)
            self._follow_evictions(state)
            self._beh_unverified = {k: v for k, v in pos.items() if k not in seen}
            self._beh_last = (pos, int(state.flows_seen))
            log.info("behaviour state resumed from %s: %d flows seen, keys %s, positions %s", path,
                     state.flows_seen, state.sizes(), pos,
                     extra={"event": "behaviour_resumed", "path": str(path), "positions": pos})
            if why:
                log.warning("behaviour checkpoints skipped for an older one: %s", "; ".join(why),
                            extra={"event": "behaviour_checkpoint_skipped"})
            return
        if why:
            log.warning("behaviour state starts fresh: no checkpoint in %s matches: %s", store.dir, "; ".join(why),
                        extra={"event": "behaviour_fresh", "reasons": why})
        else:
            log.info("no behaviour checkpoint in %s: behaviour state starts fresh", store.dir)

    def _verify_late_streams(self) -> None:
        """A stream the restored checkpoint covers but that was first read after the first window: where it
        resumed must be where the checkpoint ends (else its flows count twice or are missing; warn)."""
        first = self._frontier.firsts()
        for k in [k for k in self._beh_unverified if k in first]:
            have, got = self._beh_unverified.pop(k), first[k]
            if have != got:
                log.warning("behaviour state: %s resumed at %d but the restored checkpoint covers it up to %d; "
                            "the behaviour features of its flows may be off until its entities age out", k, got,
                            have, extra={"event": "behaviour_position_mismatch", "stream": k})

    def _checkpoint_behaviour(self, model: Any, force: bool = False) -> None:
        """Save the behaviour state with the positions it covers, at most every
        ``pipeline.behaviour_checkpoint_interval`` seconds (``force``: now, at shutdown), and then let the
        offset commits advance to those positions. Only at a clean instant (:meth:`DoneFrontier.snapshot`);
        a scored window left unwritten stops checkpoints for good (its records are fed and will be read
        again)."""
        store = self._beh_store
        if store is None:
            return
        state = getattr(model.scorer, "behaviour", None)
        tracker = self.tracker if isinstance(self.tracker, GatedOffsets) else None
        if state is None:
            if tracker is not None and tracker.gate is not None and _behaviour_params_json(model.scorer) is None:
                tracker.gate = None  # the scorer keeps no behaviour state (any more): commit what is done
            return
        if self._beh_fed_undone:
            return  # the gate stays at the newest checkpoint, which the state beyond it does not match
        now = time.monotonic()
        every = float(_opt(self._behaviour_cfg(), "checkpoint_interval", 30.0))
        if not force and now - self._beh_saved_at < every:
            return
        positions, clean = self._frontier.snapshot()
        if not clean:
            since = self._beh_unclean_since = self._beh_unclean_since or now
            if not force and tracker is not None and tracker.gate is not None and now - since > max(4 * every, 60.0):
                tracker.gate = None  # never hold commits back for good: commit what is done, warn
                log.warning("behaviour state: no consistent checkpoint for %.0f s (records of a partition out of "
                            "event-time order?); offsets are committed without one, so a restart now starts the "
                            "behaviour state fresh", now - since, extra={"event": "behaviour_checkpoint_stalled"})
            return
        self._beh_unclean_since = None
        self._beh_saved_at = now
        if self._beh_last == (positions, int(state.flows_seen)):
            return  # nothing new since the last checkpoint
        try:
            path = store.save(state, positions, self._source_id(), model.version)
        except Exception as exc:  # noqa: BLE001 - disk full, permissions: detection goes on
            self.metrics.behaviour_checkpoints.labels("failed").inc()
            if tracker is not None:
                tracker.gate = None
            log.error("behaviour checkpoint in %s failed (%s); offsets are committed without it, so a restart "
                      "now starts the behaviour state fresh", store.dir, exc,
                      extra={"event": "behaviour_checkpoint_failed"})
            return
        self._beh_last = (positions, int(state.flows_seen))
        self.metrics.behaviour_checkpoints.labels("ok").inc()
        if tracker is not None:
            tracker.gate = dict(positions)  # saved first, committed after: never ahead of the state
        log.debug("behaviour checkpoint %s: %d flows, positions %s", path, state.flows_seen, positions)

    def _carry_behaviour(self, old: Any, new: Any) -> None:
        """A hot reload keeps the behaviour state (it is about the traffic, not the model) unless the new
        model's behaviour parameters differ (then it starts fresh)."""
        state = getattr(old.scorer, "behaviour", None)
        if state is None:
            return
        params = _behaviour_params_json(new.scorer)
        if params is None:
            log.info("model %s scores without a behaviour state", new.version)
            return
        if params != state.params.to_json():
            log.info("model %s has other behaviour parameters: the behaviour state starts fresh", new.version,
                     extra={"event": "behaviour_fresh"})
            return
        new.scorer.restore_behaviour(state)
        self._follow_evictions(state)

    def _follow_evictions(self, state: Any) -> None:
        self._beh_state = state
        self._beh_evicted = {k: int(s.evicted) for k, s in state.stores.items()}

    def _behaviour_metrics(self, model: Any) -> None:
        """``graphsentry_behaviour_keys{kind}`` and ``graphsentry_behaviour_evictions_total{kind}``."""
        state = getattr(model.scorer, "behaviour", None)
        if state is None:
            return
        m = self.metrics
        if state is not self._beh_state:  # a state this process made: count its evictions from zero
            self._beh_state, self._beh_evicted = state, {k: 0 for k in state.stores}
        for kind in state.stores:
            m.behaviour_evictions.labels(kind)  # the series exist (at 0) from the first window on
        for kind, store in state.stores.items():
            m.behaviour_keys.labels(kind).set(len(store))
            n = int(store.evicted)
            if n > self._beh_evicted.get(kind, 0):
                m.behaviour_evictions.labels(kind).inc(n - self._beh_evicted.get(kind, 0))
            self._beh_evicted[kind] = n

    def _prepare_window(self, w: Any, ws: Any, model: Any, seconds: float) -> tuple:
        """``(window, scores, alerts, ref rows, arrivals, info)`` of one scored window: the deployed threshold
        applied and its alerts built, nothing written yet (``scores`` an exception: scoring failed)."""
        m = self.metrics
        if isinstance(ws, BaseException):
            return (w, ws, None, None, None, None)
        m.scoring_seconds.observe(seconds)
        rows_local = w.table.column("row").to_numpy(zero_copy_only=False).astype(np.int64)
        threshold = model.threshold
        if self._cal is not None:
            ws = self._calibrate(w, ws)
            threshold = self._cal.threshold_
            m.threshold.labels("deployed").set(float(threshold))
        ref, arrival = self.ledger.lookup(rows_local)
        if getattr(self, "_alert_stage", None) is None:  # findings + ongoing incidents (detector/alerts/stage.py)
            from detector.alerts.stage import AlertStage

            self._alert_stage = AlertStage.from_config(self.cfg["alerts"])
        wa = self._alert_stage.build(w, ws, model_version=model.version, threshold=threshold, ref_rows=ref,
                                     explain=model.explain)
        info = {"window_start": float(w.start), "window_end": float(w.end), "records": int(w.table.num_rows),
                "alerts": len(wa.alerts), "flagged": wa.flagged, "model_version": model.version,
                "rows": ref.tolist() if self.cfg["pipeline"].get("audit_rows") else None}
        return (w, ws, wa, ref, arrival, info)

    def _emit_window(self, prepared: tuple, model: Any, sinks: list[AlertSink], archived: bool = True) -> None:
        """Alerts of one prepared window (:meth:`_prepare_window`), durably written, then its records marked
        done. ``archived`` False: the archive could not take the batch (given up at shutdown): nothing is
        written and the records stay undone (a restart re-reads them)."""
        m = self.metrics
        w, ws, wa, ref, arrival, info = prepared
        rows_local = w.table.column("row").to_numpy(zero_copy_only=False).astype(np.int64)
        if isinstance(ws, BaseException):
            # One bad window must not kill a weeks-long daemon: its records are counted and dead-lettered.
            log.error("scoring window [%s, %s) failed (%r); its records are dead-lettered", w.start, w.end, ws,
                      extra={"event": "scoring_failed", "records": int(w.table.num_rows)})
            m.malformed.labels("scoring_error").inc(w.table.num_rows)
            self._mark_done(rows_local)
            return
        if not archived or not self._write_durably(sinks, wa.alerts, info):
            self._beh_fed_undone = True  # its flows are in the behaviour state but will be read again
            return  # not durable (given up at shutdown): records stay undone, offsets uncommitted
        now = time.time()
        # Event-to-alert: from the arrival of the alert's earliest flagged record to durable write.
        for a, fp in zip(wa.alerts, wa.first_pos):
            if np.isfinite(arrival[fp]):
                lat = max(0.0, now - float(arrival[fp]))
                m.event_to_alert.observe(lat)
                self.e2a_samples.append(lat)
            sev = a["severity"].lower()
            tech = a["unmapped"]["technique"]
            m.alerts.labels(tech, sev).inc()  # every write, updates of an ongoing finding included (paging rule)
            if a.get("activity_id", 1) != 1:
                continue  # the summary counts findings, not their updates (alerts.incident_gap)
            self.summary.alerts += 1
            self.summary.alerts_by_severity[sev] = self.summary.alerts_by_severity.get(sev, 0) + 1
            self.summary.alerts_by_technique[tech] = self.summary.alerts_by_technique.get(tech, 0) + 1
        m.alerts_suppressed.inc(wa.suppressed)
        m.windows_scored.inc()
        m.records_scored.inc(w.table.num_rows)
        m.flagged_records.inc(wa.flagged)
        self.summary.windows_scored += 1
        self.summary.records_scored += int(w.table.num_rows)
        self.summary.flagged_records += wa.flagged
        self._mark_done(rows_local)
        self._check_fit(model, int(wa.flagged), int(w.table.num_rows))
        if self._cal is not None:
            self._save_calibration(model, force=self._cal_force)

    def _check_fit(self, model: Any, flagged: int, records: int) -> None:
        """Flagged share over the recent records against the model's calibrated rate (gauge, warning)."""
        from detector.fit_check import check_fit

        self._fit.add(flagged, records)
        self.metrics.flagged_ratio.set(self._fit.share)
        if not self._fit_enabled or model.target_fpr is None:
            return  # nothing to compare with: a model without a calibrated target
        v = check_fit(self._fit.flagged, self._fit.records, model.target_fpr, self._fit.min_records)
        if v.fits or not v.enough:
            if v.enough and self._fit_warned_at is not None:
                log.info("flagged share back to %.1f%% (target %.1f%%)", 100 * v.share, 100 * v.target_fpr,
                         extra={"event": "fit_ok", "flagged_ratio": v.share, "target_fpr": v.target_fpr})
                self._fit_warned_at = None
            return
        now = time.monotonic()
        every = float(_opt(self.cfg.get("pipeline") or {}, "fit_warn_interval", 600.0))
        if self._fit_warned_at is not None and now - self._fit_warned_at < every:
            return
        self._fit_warned_at = now
        self.metrics.fit_warnings.inc()
        log.warning("model %s: %s", model.version, v.message(model.path or "MODEL"),
                    extra={"event": "model_misfit", "flagged_ratio": v.share, "target_fpr": v.target_fpr,
                           "records": v.records, "model_version": model.version})

    def _write_durably(self, sinks: list[AlertSink], alerts: list[dict], info: dict) -> bool:
        """Write + flush every sink; retry required sinks until they succeed. False when a required
        sink still failed after a stop request and ``pipeline.stop_grace`` seconds (its window's
        offsets then stay uncommitted: a restart re-reads them)."""
        from ingest.kafka_io import KafkaUnavailable

        for s in sinks:
            delay = 0.5
            written = False
            failing_since = None
            part = f"alert sink {s.name}"
            while True:
                try:
                    if not written or not getattr(s, "resumable_flush", False):
                        if hasattr(s, "record_window"):
                            s.record_window(info)
                        if alerts:
                            s.write(alerts)
                        written = True
                    s.flush()  # a resumable sink keeps what failed and goes on with it here
                    if failing_since is not None:
                        if self.health is not None and isinstance(last_exc, KafkaUnavailable):
                            self.health.up(part)
                        else:
                            log.info("sink %s recovered after %.1f s", s.name, time.monotonic() - failing_since,
                                     extra={"event": "sink_recovered", "sink": s.name})
                    break
                except Exception as exc:  # noqa: BLE001
                    last_exc = exc
                    failing_since = failing_since or time.monotonic()
                    self.metrics.sink_errors.labels(s.name).inc()
                    if not s.required:
                        log.warning("optional sink %s failed (%s); alerts of this window not sent there", s.name, exc,
                                    extra={"event": "sink_failed", "sink": s.name})
                        break
                    if self._hard_stop.is_set():
                        raise RuntimeError(f"required sink {s.name} failing at shutdown: {exc}") from exc
                    grace = float(_opt(self.cfg.get("pipeline") or {}, "stop_grace", 30.0))
                    if self.stop_event.is_set() and time.monotonic() - failing_since >= grace:
                        log.error("stopping while required sink %s still fails (%s): the alerts of window [%s, %s) "
                                  "are not written and its offsets not committed (a restart re-reads them)",
                                  s.name, exc, info.get("window_start"), info.get("window_end"),
                                  extra={"event": "sink_given_up", "sink": s.name})
                        return False
                    if self.health is not None and isinstance(exc, KafkaUnavailable):
                        self.health.down(part, getattr(s, "topic", None), str(exc), delay)
                    else:
                        log.warning("required sink %s failed (%s); retrying in %.1fs (offsets not committed)",
                                    s.name, exc, delay, extra={"event": "sink_retry", "sink": s.name})
                    time.sleep(delay)
                    delay = min(delay * 2, 10.0)
        return True

    # -- the retraining archive (archive section; docs/archive.md) ------------------------------------
    def _open_archive(self):
        from ingest.archive import ArchiveWriter

        a = self.cfg["archive"]
        w = ArchiveWriter(a["path"], max_bytes=a.get("max_bytes"), max_age=a.get("max_age"),
                          rows_per_file=int(_opt(a, "rows_per_file", 1_000_000)), kind=self.cfg["source"]["kind"])
        self._archive_seen = {}
        return w

    def _archive_metrics(self) -> None:
        """Add what the open writer made durable (or dropped as duplicates) since the last call to the
        counters and the summary."""
        w = self._archive
        if w is None:
            return
        m, s = self.metrics, self.summary
        for name, metric in (("rows_written", m.archive_records), ("bytes_written", m.archive_bytes),
                             ("duplicates_dropped", m.archive_duplicates)):
            v = int(getattr(w.stats, name))
            d = v - self._archive_seen.get(name, 0)
            self._archive_seen[name] = v
            if d <= 0:
                continue
            metric.inc(d)
            if name == "rows_written":
                s.archived += d
            elif name == "duplicates_dropped":
                s.archive_duplicates += d

    def _drop_archive(self) -> None:
        """Forget the writer after a failure (what it buffered is not durable; the next attempt opens the
        archive again, which finishes or discards the failed flush's files, and writes the batch anew)."""
        try:
            self._archive_metrics()
        except Exception:  # noqa: BLE001
            pass
        self._archive = None

    def _record_alert_ids(self, w: Any, ws: Any, wa: Any, pos: np.ndarray, valid: np.ndarray) -> pa.Array | None:
        """The alert id (OCSF ``finding_info.uid``) of each table row's alert, null for rows not flagged: the
        finding each scored record went into (:attr:`detector.alerts.WindowAlerts.finding_of`)."""
        if not wa.alerts or wa.finding_of is None:
            return None
        out = np.full(w.table.num_rows, None, dtype=object)
        sel = np.flatnonzero(valid)
        out[pos[sel]] = np.asarray(wa.finding_of, dtype=object)[sel]
        return pa.array(out.tolist(), pa.string())

    def _archive_table(self, prepared: tuple, model: Any) -> tuple[pa.Table, dict] | None:
        """One prepared window's records and the columns :meth:`ArchiveWriter.write` takes with them."""
        w, ws, wa, ref, _arrival, _info = prepared
        if isinstance(ws, BaseException) or w.table.num_rows == 0:
            return None  # not scored: nothing to archive (its records are dead-lettered)
        table = w.table
        n = table.num_rows
        rows_local = table.column("row").to_numpy(zero_copy_only=False).astype(np.int64)
        ws_rows = np.asarray(ws.rows, dtype=np.int64)
        pos = np.searchsorted(rows_local, ws_rows)  # windows are in `row` order (as build_alerts assumes)
        valid = pos < n
        valid[valid] = rows_local[pos[valid]] == ws_rows[valid]
        scores = np.full(n, np.nan)
        alerts = np.zeros(n, dtype=bool)
        have = np.zeros(n, dtype=bool)
        scores[pos[valid]] = np.asarray(ws.scores, dtype=np.float64)[valid]
        alerts[pos[valid]] = np.asarray(ws.alerts, dtype=bool)[valid]
        have[pos[valid]] = True
        topic, part, off, idx, known = self.ledger.positions(rows_local)
        positions = {"topic": pa.array(topic.tolist(), pa.string()), "partition": pa.array(part, pa.int32()),
                     "offset": pa.array(off, pa.int64(), mask=~known), "index": pa.array(idx, pa.int32())}
        if "row" in table.column_names:  # the input's own row numbers, not the daemon-local ones
            table = table.set_column(table.schema.get_field_index("row"), "row", pa.array(ref, pa.int64()))
        return table, {"scores": pa.array(scores, pa.float64(), mask=~have),
                       "alerts": pa.array(alerts, pa.bool_(), mask=~have),
                       "alert_ids": self._record_alert_ids(w, ws, wa, pos, valid),
                       "model_version": model.version, "positions": positions}

    def _archive_windows(self, prepared: list[tuple], model: Any) -> bool:
        """Write the scored records of a batch of windows to the archive and flush it, before any of them is
        marked done. A failure (disk full, permissions, a broken file system) is retried like a required alert
        sink's: the writer is opened again and the batch written anew (what an earlier attempt made durable
        is dropped as a duplicate), every 0.5 s to 10 s, for as long as it takes (scoring waits: backpressure).
        False when it still failed after a stop and ``pipeline.stop_grace`` seconds: the batch's records then
        stay undone and their offsets uncommitted (a restart re-reads them)."""
        parts = [x for x in (self._archive_table(p, model) for p in prepared) if x is not None]
        if not parts:
            return True
        delay = 0.5
        failing_since = None
        while True:
            try:
                if self._archive is None:
                    self._archive = self._open_archive()
                for t, kw in parts:
                    self._archive.write(t, **kw)
                self._archive.flush()
                self._archive_metrics()
                if failing_since is not None:
                    log.info("archive %s recovered after %.1f s", self.cfg["archive"]["path"],
                             time.monotonic() - failing_since, extra={"event": "archive_recovered"})
                return True
            except Exception as exc:  # noqa: BLE001
                first = failing_since is None
                failing_since = failing_since or time.monotonic()
                self.metrics.sink_errors.labels("archive").inc()
                self.metrics.archive_errors.inc()
                self._drop_archive()
                if self._hard_stop.is_set():
                    raise RuntimeError(f"archive failing at shutdown: {exc}") from exc
                grace = float(_opt(self.cfg.get("pipeline") or {}, "stop_grace", 30.0))
                if self.stop_event.is_set() and time.monotonic() - failing_since >= grace:
                    log.error("stopping while the archive %s still fails (%s): %d scored windows are not archived "
                              "and their offsets not committed (a restart re-reads them)",
                              self.cfg["archive"]["path"], exc, len(parts), extra={"event": "archive_given_up"})
                    return False
                (log.error if first else log.warning)(
                    "archive %s failed (%s: %s); retrying in %.1fs (the records' offsets are not committed)",
                    self.cfg["archive"]["path"], type(exc).__name__, exc, delay,
                    extra={"event": "archive_failed" if first else "archive_retry", "sink": "archive"})
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _close_archive(self) -> None:
        """At shutdown: flush what is buffered (normally nothing: every batch was flushed) and close."""
        w = self._archive
        if w is None:
            return
        try:
            w.close()
        except Exception as exc:  # noqa: BLE001 - not durable means not committed: a restart re-reads it
            log.warning("closing the archive %s: %s", self.cfg["archive"]["path"], exc)
        try:
            self._archive_metrics()
        finally:
            self._archive = None

    # -- run -----------------------------------------------------------------------------
    def run(self) -> DaemonSummary:
        t_start = time.monotonic()
        cfg = self.cfg
        self._hard_stop = threading.Event()
        prev_handlers = {}
        if self.install_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                prev_handlers[sig] = signal.getsignal(sig)
                signal.signal(sig, lambda signum, _f: self.stop(signal.Signals(signum).name))
        server = None
        watcher = None
        sinks: list[AlertSink] = []
        try:
            if self._model is None:
                self._model = self.loader(cfg["model"]["path"])
            self._model_alias = registry_alias(cfg["model"]["path"]) if self._model.path and cfg["model"].get("path") \
                else ""
            self.metrics.set_model(self._model.version, self._model.path, self._model.target_fpr, self._model_alias)
            self._setup_calibration(self._model)
            self._setup_behaviour_store(self._model)
            if self.install_signals and threading.current_thread() is threading.main_thread() \
                    and hasattr(signal, "SIGHUP"):
                prev_handlers[signal.SIGHUP] = signal.getsignal(signal.SIGHUP)
                signal.signal(signal.SIGHUP, lambda _s, _f: self.reset_calibration())
            mw = getattr(self._model, "window", None) or {}
            if cfg["window"].get("size") is None:       # not configured: the model's own windows
                cfg["window"]["size"] = float(mw.get("size", 60.0))
            if cfg["window"].get("lateness") is None:
                cfg["window"]["lateness"] = float(mw.get("lateness", 10.0))
            self.summary.model_version = self._model.version
            if cfg["model"].get("watch") and cfg["model"].get("path") and self._model.path:
                watcher = ModelWatcher(cfg["model"]["path"], self.loader, float(cfg["model"]["watch_interval"]),
                                       self.metrics, loaded=self._model.path).start()
            is_kafka = cfg["source"]["type"] == "kafka"
            if self._kafka_in_play():
                from ingest.kafka_io import BrokerHealth

                self.health = BrokerHealth(cfg["kafka"]["bootstrap"], self.metrics)
            else:
                self.metrics.broker_up.set(1)  # no Kafka client: nothing to wait for
            # Metrics (and /readyz, false until the source is set up) first: while the daemon waits for
            # its broker below, an operator can see that it does.
            if cfg["metrics"].get("enabled"):
                try:
                    server = MetricsServer(self.metrics, cfg["metrics"]["host"], int(cfg["metrics"]["port"]),
                                           ready=lambda: self.ready,
                                           health=lambda: {"model_version": self._model.version}).start()
                except OSError as exc:
                    raise ValueError(f"cannot serve metrics on {cfg['metrics']['host']}:{cfg['metrics']['port']} "
                                     f"({exc.strerror}); set metrics.port (0 = any free port) or "
                                     "metrics.enabled: false") from exc
                self.summary.metrics_url = f"http://{server.host}:{server.port}/metrics"
            self._log_startup()
            sinks = self._make_sinks()
            self.summary.sinks = [_describe(s) for s in sinks]
            if self._archive_on:  # opened now: a bad archive path stops the start, not the first window
                self._archive = self._open_archive()
            if self.health is not None and not is_kafka:
                self.health.up("setup")  # a Kafka sink only: it was created, the broker answered
            self.metrics.up.set(1)
            q_in: queue.Queue = queue.Queue(maxsize=int(cfg["pipeline"]["queue_size"]))
            q_win: queue.Queue = queue.Queue(maxsize=int(cfg["pipeline"]["window_queue_size"]))
            self._file_thread = threading.Thread(target=lambda: None)
            if is_kafka:
                self._kafka_source(q_in)
            else:
                self._file_thread = self._file_source(q_in)
                self._ready.set()
            drain_open = not is_kafka
            wt = threading.Thread(target=self._guard, args=(self._window_stage, q_in, q_win, drain_open),
                                  name="windows", daemon=True)
            st = threading.Thread(target=self._guard, args=(self._score_stage, q_win, sinks, watcher),
                                  name="scoring", daemon=True)
            wt.start()
            st.start()
            # Main thread: wait for a stop signal or the end of the pipeline; log progress now and then.
            every = float(_opt(cfg["pipeline"], "progress_interval", 30.0) or 0)
            next_progress = time.monotonic() + every if every > 0 else float("inf")
            self._progress_prev = (time.monotonic(), 0, 0)
            while wt.is_alive() or st.is_alive():
                if self.stop_event.wait(0.2):
                    break
                if time.monotonic() >= next_progress:
                    next_progress = time.monotonic() + every
                    self._log_progress()
                if self.source is not None and self.source.error is not None:
                    self._errors.append(self.source.error)
                if self._errors:
                    self.stop("error")
            if self.stop_event.is_set():
                # Stop reading; the stages drain what is queued and end.
                if self.source is not None:
                    self.source.stop_reading()
                if getattr(self, "_file_stop", None) is not None:
                    self._file_stop.set()
                    try:
                        q_in.put(None, timeout=1)
                    except queue.Full:
                        pass
            else:
                self.stopped_by = self.stopped_by or "end of input"
            wt.join()
            st.join()
            if self._cal is not None:
                self._save_calibration(self._model, force=True)
            if self._beh_store is not None:  # before the source's final commit, which it gates
                self._checkpoint_behaviour(self._model, force=True)
            if every > 0:
                self._log_progress(final=True)
            if self.source is not None:
                self.source.stop()  # final commit of what is durable, in the consumer's own thread
                self.source.join(30)
                self.summary.committed = {f"{t}/{p}": o for (t, p), o in self.source.committed_offsets().items()}
        except StoppedWaiting:
            log.info("stopped (%s) while waiting for Kafka; nothing was read", self.stopped_by or "stop",
                     extra={"event": "stopped_waiting"})
        finally:
            self._hard_stop.set()
            if watcher is not None:
                watcher.stop()
            self._close_archive()
            for s in sinks:
                try:
                    s.close()
                except Exception as exc:  # noqa: BLE001
                    log.warning("closing sink %s: %s", s.name, exc)
            for dl in (getattr(self, "_kafka_dl", None), getattr(self, "_file_dl", None)):
                if dl is not None:
                    try:
                        dl.close()
                    except Exception:  # noqa: BLE001
                        pass
            self.metrics.up.set(0)
            if server is not None:
                server.stop()
            for sig, h in prev_handlers.items():
                signal.signal(sig, h)
        s = self.summary
        s.records_in = int(s.records_in)
        s.malformed = {}
        for metric in self.metrics.registry.collect():
            if metric.name == "graphsentry_malformed":
                for smp in metric.samples:
                    if smp.name.endswith("_total"):
                        s.malformed[smp.labels["reason"]] = int(smp.value)
        s.model_version = self._model.version if self._model else ""
        s.duration_s = time.monotonic() - t_start
        s.stopped_by = self.stopped_by or "end of input"
        if self.e2a_samples:
            arr = np.asarray(self.e2a_samples)
            s.event_to_alert_p50_s = float(np.percentile(arr, 50))
            s.event_to_alert_p99_s = float(np.percentile(arr, 99))
        if self._errors:
            raise RuntimeError(f"daemon failed: {self._errors[0]!r}") from self._errors[0]
        return s

    def _log_startup(self) -> None:
        cfg, m = self.cfg, self._model
        try:
            from importlib.metadata import version as _v

            ver = _v("graphsentry")
        except Exception:  # noqa: BLE001
            ver = "unknown"
        if cfg["source"]["type"] == "kafka":
            k = cfg["kafka"]
            src = f"kafka {k['bootstrap']} topic {k['topic']} group {k.get('group_id')} ({k.get('backend')})"
        else:
            s = cfg["source"]
            src = f"files {', '.join(map(str, s.get('paths') or []))}{' (following)' if s.get('follow') else ''}"
        if self._extra_sinks is not None:
            sinks = [_describe(x) for x in self._extra_sinks]
        else:
            sinks = [f"{x.get('type')}: {x.get('path') or x.get('topic') or x.get('url') or ''}".rstrip(": ")
                     for x in cfg["alerts"]["sinks"]]
        if self._archive_on:
            sinks.append(f"archive: {cfg['archive']['path']}")
        metrics = self.summary.metrics_url or "off"
        log.info("graphsentry %s serving: model %s (%s), source %s, sinks [%s], metrics %s, window %ss "
                 "(lateness %ss)", ver, m.version, m.path or "injected", src, "; ".join(sinks), metrics,
                 cfg["window"]["size"], cfg["window"]["lateness"],
                 extra={"event": "startup", "version": ver, "model_version": m.version, "model_path": m.path,
                        "source": src, "sinks": sinks, "metrics": metrics})

    def _log_progress(self, final: bool = False) -> None:
        s, m = self.summary, self.metrics
        now = time.monotonic()
        t0, n0, k0 = getattr(self, "_progress_prev", (now, 0, 0))
        dt = max(now - t0, 1e-9)
        rate = (s.records_scored - k0) / dt
        self._progress_prev = (now, s.records_in, s.records_scored)
        lag = None
        if self.source is not None:
            lag = 0.0
            for metric in m.registry.collect():
                if metric.name == "graphsentry_consumer_lag":
                    lag = sum(x.value for x in metric.samples)
        malformed = sum(v for k, v in _malformed(m).items())
        waiting = self.health.waiting() if self.health is not None else {}
        log.info("%s: read %d, scored %d (%.0f/s), alerts %d, flagged %.2f%% of the last %d, late %d, malformed %d%s%s",
                 "final" if final else "progress", s.records_in, s.records_scored, rate, s.alerts,
                 100 * self._fit.share, self._fit.records, s.late, malformed,
                 f", lag {lag:.0f}" if lag is not None else "",
                 f", waiting for Kafka ({', '.join(sorted(waiting))})" if waiting else "",
                 extra={"event": "progress", "records_in": s.records_in, "records_scored": s.records_scored,
                        "records_per_s": round(rate, 1), "alerts": s.alerts, "late": s.late,
                        "malformed": malformed, "flagged_ratio": round(self._fit.share, 6), "consumer_lag": lag,
                        "waiting_for": sorted(waiting)})

    def _guard(self, fn: Callable, *args: Any) -> None:
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001
            log.exception("pipeline stage %s failed", fn.__name__)
            self._errors.append(exc)
            self.stop_event.set()


_IDLE = object()


def _opt(section: dict, key: str, default: Any) -> Any:
    """An optional config value with a safe default (keys the config schema may not list yet)."""
    v = section.get(key) if isinstance(section, dict) else None
    return default if v is None else v


def _malformed(m: Metrics) -> dict[str, int]:
    out: dict[str, int] = {}
    for metric in m.registry.collect():
        if metric.name == "graphsentry_malformed":
            for smp in metric.samples:
                if smp.name.endswith("_total"):
                    out[smp.labels["reason"]] = int(smp.value)
    return out


def _describe(s: AlertSink) -> str:
    for attr in ("path", "topic", "url"):
        v = getattr(s, attr, None)
        if v:
            return f"{s.name}: {v}"
    return s.name


def run_daemon(config: dict, scorer: Any = None, model: LoadedModel | None = None,
               loader: Callable[[str], LoadedModel] | None = None, sinks: list[AlertSink] | None = None,
               metrics: Metrics | None = None, install_signals: bool = True) -> DaemonSummary:
    """Run the daemon until SIGTERM/SIGINT or the end of a finite source; return its summary.

    ``config`` is an effective config (:func:`detector.daemon.config.load_config`). The model
    comes from ``config.model.path`` unless a ``scorer`` (any object with
    ``score_window(window) -> WindowScores``) or a ``LoadedModel`` is passed in.
    """
    if model is None and scorer is not None:
        model = scorer_model(scorer)
    d = Daemon(config, model=model, loader=loader, sinks=sinks, metrics=metrics, install_signals=install_signals)
    return d.run()

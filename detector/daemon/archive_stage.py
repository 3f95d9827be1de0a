"""The retraining archive of the daemon (docs/archive.md): every scored record of a batch of windows
written with its score, alert, alert id, model version and exact position, flushed before any of them
is marked done."""
from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pyarrow as pa

from detector.daemon.helpers import _opt

log = logging.getLogger("detector.daemon.pipeline")


class ArchiveStage:
    """:class:`~detector.daemon.pipeline.Daemon`'s archive stage (a part of the one class, kept in its own module)."""

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

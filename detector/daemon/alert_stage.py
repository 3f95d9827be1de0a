"""Alerts of scored windows: the deployed threshold applied, findings built, written durably to every
required sink (retried), then the window's records marked done; the running fit check."""
from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from detector.alerts import make_sink
from detector.alerts.sinks import AlertSink
from detector.daemon.helpers import _opt

log = logging.getLogger("detector.daemon.pipeline")


class AlertStage:
    """:class:`~detector.daemon.pipeline.Daemon`'s alert stage (a part of the one class, kept in its own module)."""

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
            last_exc: Exception | None = None
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

"""The deployed threshold as daemon state: grace-period calibration (docs/calibration.md), saved
and resumed, reset by SIGHUP between windows."""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

log = logging.getLogger("detector.daemon.pipeline")


class CalibrationStage:
    """:class:`~detector.daemon.pipeline.Daemon`'s calibration stage (a part of the one class, kept in its own module)."""

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

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

:class:`Daemon` is here (set-up, control, :meth:`Daemon.run`, progress logs); its parts are one module each,
mixed into the class: :mod:`~detector.daemon.stages` (sources, window and score threads),
:mod:`~detector.daemon.alert_stage` (threshold, findings, durable writes), :mod:`~detector.daemon.archive_stage`,
:mod:`~detector.daemon.calibration_stage`, :mod:`~detector.daemon.behaviour` (behaviour-state checkpoints).
:mod:`~detector.daemon.models` loads and hot-reloads the model, :mod:`~detector.daemon.ledger` keeps the records
in flight (rows, partition merge, done frontier), :mod:`~detector.daemon.summary` is what a run returns. Every
name they define is importable from here too.
"""
from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from detector.alerts.sinks import AlertSink
from detector.daemon.alert_stage import AlertStage  # noqa: F401
from detector.daemon.archive_stage import ArchiveStage  # noqa: F401
from detector.daemon.behaviour import BehaviourCheckpoints, BehaviourStage  # noqa: F401
from detector.daemon.calibration_stage import CalibrationStage  # noqa: F401
from detector.daemon.helpers import _describe, _malformed, _opt  # noqa: F401
from detector.daemon.ledger import DoneFrontier, GatedOffsets, PartitionMerger, RowLedger  # noqa: F401
from detector.daemon.models import (  # noqa: F401
    LoadedModel,
    ModelWatcher,
    default_loader,
    model_fingerprint,
    plugin_loader,
    registry_alias,
    resolve_model_dir,
    scorer_model,
)
from detector.daemon.stages import Stages  # noqa: F401
from detector.daemon.summary import DaemonSummary  # noqa: F401
from detector.metrics import Metrics, MetricsServer
from ingest.kafka_io import StoppedWaiting

log = logging.getLogger(__name__)


class Daemon(BehaviourStage, CalibrationStage, AlertStage, ArchiveStage, Stages):
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
        self.window_timings: deque = deque(maxlen=10_000)  # per window: seconds per stage after its end (stages.py)
        self._closed_at: dict[tuple[float, float], float] = {}  # (start, end) -> wall time the window closed
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
            self._warm_up(self._model)
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

    def _warm_up(self, model: LoadedModel) -> None:
        """The scorer's and the alert build's one-time costs before the first window (imports, the first torch
        calls, the ATT&CK tables, a frozen heap: :func:`detector.scoring.warm.warm_up`), so the first window's
        alerts are not late for them."""
        from detector.alerts.stage import AlertStage

        self._alert_stage = AlertStage.from_config(self.cfg["alerts"])
        warm = getattr(model.scorer, "warm_up", None)
        if callable(warm):
            secs = warm(self._alert_stage.networks)
            log.debug("warm-up took %.2f s", secs)

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

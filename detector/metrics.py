"""Prometheus metrics for the detection daemon, and the /metrics, /healthz, /readyz HTTP server.

Every daemon owns its own ``CollectorRegistry`` (not the process-global one) so
that tests and benchmarks can run several daemons in one process without
"duplicated timeseries" errors. Labels are low-cardinality only (source, reason,
technique, severity, partition number) — never an IP address.
"""
from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

log = logging.getLogger(__name__)

# Scoring a window takes milliseconds to seconds; event-to-alert includes the window length.
SCORING_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# fine around a window plus a few seconds (the goal with 5-60 s windows is window + 2 s), coarse beyond
E2A_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 15.0, 20.0, 30.0, 45.0, 60.0, 62.0,
               65.0, 90.0, 120.0, 300.0, 600.0, 1800.0)


class Metrics:
    """All daemon metrics, registered in a private registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.records = Counter("graphsentry_records_total", "Records read, by source", ["source"], registry=r)
        self.malformed = Counter(
            "graphsentry_malformed_total", "Records or messages that could not be decoded, by reason", ["reason"],
            registry=r,
        )
        self.late = Counter("graphsentry_late_total", "Records that arrived after their window closed", registry=r)
        self.windows_scored = Counter("graphsentry_windows_scored_total", "Windows scored", registry=r)
        self.records_scored = Counter("graphsentry_records_scored_total", "Records scored", registry=r)
        # flagged / scored against the target FPR is the threshold-drift signal (a new device, a changed
        # network, or a big attack): the GraphsentryThresholdDrift rule compares them.
        self.flagged_records = Counter(
            "graphsentry_flagged_records_total", "Scored records above the model's alert threshold", registry=r
        )
        self.target_fpr = Gauge(
            "graphsentry_target_fpr", "Benign false-positive rate the loaded model's threshold was calibrated for",
            registry=r,
        )
        self.scoring_seconds = Histogram(
            "graphsentry_scoring_seconds", "Time to build and score one window", buckets=SCORING_BUCKETS, registry=r
        )
        # where a window's seconds go after its end (docs/scale-out.md, "Event-to-alert latency"): close (event
        # time passing end + lateness, to the window queued; live streams only), queued (waiting for the
        # scorer), score, alerts (threshold, findings, explanations), write (every required sink durable)
        self.window_stage = Histogram(
            "graphsentry_window_stage_seconds", "Seconds one window spends in each stage after its end, by stage",
            ["stage"], buckets=SCORING_BUCKETS, registry=r,
        )
        self.event_to_alert = Histogram(
            "graphsentry_event_to_alert_seconds",
            "Wall time from an alert's first flagged record (its producer timestamp; file: read time) to the alert "
            "being durably written",
            buckets=E2A_BUCKETS,
            registry=r,
        )
        self.consumer_lag = Gauge(
            "graphsentry_consumer_lag", "Kafka consumer lag (messages) per partition", ["topic", "partition"],
            registry=r,
        )
        self.partitions_held = Gauge(
            "graphsentry_partitions_held", "Partitions paused because they are ahead of the others in event time",
            registry=r,
        )
        self.queue_depth = Gauge("graphsentry_queue_depth", "Items waiting in a pipeline queue", ["queue"], registry=r)
        self.alerts = Counter(
            "graphsentry_alerts_total", "Alerts written, by technique and severity", ["technique", "severity"],
            registry=r,
        )
        self.alerts_suppressed = Counter(
            "graphsentry_alerts_suppressed_total", "Flagged records folded into an existing alert (dedup)", registry=r
        )
        self.dead_letter = Counter(
            "graphsentry_dead_letter_total", "Messages sent to the dead-letter sink", ["reason"], registry=r
        )
        self.sink_errors = Counter("graphsentry_sink_errors_total", "Alert sink write failures", ["sink"], registry=r)
        self.commits = Counter("graphsentry_offset_commits_total", "Kafka offset commits", registry=r)
        self.model_reloads = Counter("graphsentry_model_reloads_total", "Model hot reloads", ["result"], registry=r)
        self.paused = Gauge("graphsentry_source_paused", "1 while the source is paused for backpressure", registry=r)
        # graphsentry_model_info{version, path, alias}: alias is the registry alias (champion, ...) the configured
        # model path is a symlink of (training/registry.py); absent (= empty) otherwise
        self.model_info = Info(
            "graphsentry_model", "Version of the model currently scoring, its directory and the registry alias "
            "the configured model path follows", registry=r)
        self.up = Gauge("graphsentry_up", "1 while the daemon pipeline runs", registry=r)
        self.broker_up = Gauge(
            "graphsentry_broker_up", "1 while every Kafka client of the daemon reaches its broker, 0 while one waits",
            registry=r,
        )
        self.broker_reconnects = Counter(
            "graphsentry_broker_reconnects_total", "Times the daemon got its Kafka broker back after an outage",
            registry=r,
        )
        self.flagged_ratio = Gauge(
            "graphsentry_flagged_ratio",
            "Share of recently scored records above the alert threshold (the fit-check window of records)",
            registry=r,
        )
        self.fit_warnings = Counter(
            "graphsentry_fit_warnings_total",
            "Times the flagged share was far above the model's calibrated rate (the model does not fit the traffic)",
            registry=r,
        )
        # kind="trained": the loaded model's stored threshold; kind="deployed": the one alerts use (equal to it
        # unless grace-period calibration moved it, docs/calibration.md)
        self.threshold = Gauge(
            "graphsentry_threshold", "Alert threshold: the model's trained one and the deployed one", ["kind"],
            registry=r,
        )

        # long-horizon behaviour state (ingest.behaviour, docs/daemon-operations.md): keys held per entity kind
        # (pair, src, svc; each bounded by its capacity) and the least recently seen keys evicted to stay so
        self.behaviour_keys = Gauge(
            "graphsentry_behaviour_keys", "Keys held in the long-horizon behaviour state, by entity kind", ["kind"],
            registry=r,
        )
        self.behaviour_evictions = Counter(
            "graphsentry_behaviour_evictions", "Behaviour-state keys evicted (least recently seen) to stay within "
            "capacity, by entity kind", ["kind"], registry=r,
        )
        self.behaviour_checkpoints = Counter(
            "graphsentry_behaviour_checkpoints", "Behaviour-state checkpoints written (ok) or failed", ["result"],
            registry=r,
        )

        # the retraining archive (archive section, docs/archive.md): what the flushes made durable
        self.archive_records = Counter(
            "graphsentry_archive_records", "Scored records written durably to the archive", registry=r)
        self.archive_bytes = Counter(
            "graphsentry_archive_bytes", "Bytes of archive files written (Parquet, zstd)", registry=r)
        self.archive_duplicates = Counter(
            "graphsentry_archive_duplicates", "Records not archived again because the archive already held their "
            "source position (re-read after a restart)", registry=r)
        self.archive_errors = Counter(
            "graphsentry_archive_errors", "Failed archive writes/flushes, every retry included (the records' "
            "offsets wait)", registry=r)

    def set_model(self, version: str, path: str = "", target_fpr: float | None = None, alias: str = "") -> None:
        info = {"version": str(version), "path": str(path)}
        if alias:  # no label is the same as an empty one to PromQL; the series stays as before off a registry
            info["alias"] = str(alias)
        self.model_info.info(info)
        if target_fpr is not None:
            self.target_fpr.set(float(target_fpr))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Current value of one sample (tests and summaries); 0.0 when absent."""
        v = self.registry.get_sample_value(name, labels or {})
        return float(v or 0.0)


class MetricsServer:
    """Serves /metrics, /healthz (process alive) and /readyz (pipeline ready) on one port.

    Binds 127.0.0.1 unless told otherwise: metrics can reveal traffic volumes, so exposing
    them on all interfaces is an explicit operator decision.
    """

    def __init__(
        self, metrics: Metrics, host: str = "127.0.0.1", port: int = 9109,
        ready: Callable[[], bool] | None = None, health: Callable[[], dict] | None = None,
    ) -> None:
        self.metrics = metrics
        self._ready = ready or (lambda: True)
        self._health = health or (lambda: {})
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body, ctype, code = outer.metrics.render(), CONTENT_TYPE_LATEST, 200
                elif path == "/healthz":
                    body = json.dumps({"status": "ok", **outer._health()}).encode()
                    ctype, code = "application/json", 200
                elif path == "/readyz":
                    ok = bool(outer._ready())
                    body = json.dumps({"ready": ok}).encode()
                    ctype, code = "application/json", (200 if ok else 503)
                else:
                    body, ctype, code = b"not found\n", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt: str, *args: object) -> None:  # scrapes every 15 s: keep logs quiet
                log.debug("metrics http: " + fmt, *args)

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self.host, self.port = self._httpd.server_address[:2]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="metrics-http", daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() waits for serve_forever, which never ran otherwise
            self._httpd.shutdown()
        self._httpd.server_close()

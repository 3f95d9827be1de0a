"""Helpers for the daemon tests: a small synthetic flow capture and a simple real scorer.

The scorer is a genuine (if simple) detector passed to the daemon by dependency injection:
the score of a flow is its source's fan-out in the window (distinct destination ports+hosts),
so a port scan scores high. It lets the transport/alerting tests run without a trained model.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from ingest.schema import FLOW_SCHEMA, conform

T0 = 1_700_000_000.0


def make_flows(n_benign: int = 400, n_scan: int = 120, duration: float = 40.0, seed: int = 0,
               t0: float = T0) -> pa.Table:
    """Benign chatter between 20 hosts plus one scanner sweeping ports, time-ordered."""
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.uniform(0, duration, n_benign))
    src = [f"10.0.0.{i}" for i in rng.integers(1, 21, n_benign)]
    dst = [f"10.0.1.{i}" for i in rng.integers(1, 6, n_benign)]
    dport = rng.choice([53, 80, 443], n_benign)
    sts = np.sort(rng.uniform(duration * 0.3, duration * 0.6, n_scan))
    rows = []
    for t, s, d, p in zip(ts, src, dst, dport):
        rows.append((t, s, int(rng.integers(30000, 60000)), d, int(p), "tcp", int(rng.integers(100, 5000))))
    for i, t in enumerate(sts):
        rows.append((t, "10.0.9.9", 40000, f"10.0.1.{1 + i % 5}", 1000 + i, "tcp", 0))
    rows.sort(key=lambda r: r[0])
    n = len(rows)
    t = pa.table({
        "row": pa.array(np.arange(n), pa.int64()),
        "uid": [f"C{i:06d}" for i in range(n)],
        "ts": pa.array([int((t0 + r[0]) * 1e6) for r in rows], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "duration": [0.1] * n,
        "src_ip": [r[1] for r in rows], "src_port": pa.array([r[2] for r in rows], pa.int32()),
        "dst_ip": [r[3] for r in rows], "dst_port": pa.array([r[4] for r in rows], pa.int32()),
        "proto": [r[5] for r in rows],
        "src_bytes": pa.array([r[6] for r in rows], pa.int64()),
        "label": pa.array([1 if r[1] == "10.0.9.9" else 0 for r in rows], pa.int8()),
        "source": ["synthetic"] * n,
    })
    return conform(t, FLOW_SCHEMA)



class ListDL:
    """A dead-letter sink keeping ``(line, reason, raw)`` of each record (tests of the decoders)."""

    def __init__(self):
        self.items: list[tuple] = []

    def add(self, source, line, reason, raw):
        self.items.append((line, reason, raw))


def json_flow_messages(n: int = 300, seed: int = 3) -> list[bytes]:
    """``n`` JSON-per-record flow messages, a fifth of them from scanners."""
    from ingest.kafka_io import table_to_json_messages

    return table_to_json_messages(make_flows(n_benign=n - n // 5, n_scan=n // 5, duration=30.0, seed=seed))

@dataclass
class Scores:
    """Same fields as detector.scoring.WindowScores (kept torch-free so daemon subprocesses start fast)."""

    rows: np.ndarray
    scores: np.ndarray
    alerts: np.ndarray
    top_technique: list
    node_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    node_key: list = field(default_factory=list)
    window_start: float = 0.0
    window_end: float = 0.0
    threshold: float = float("nan")


class FanoutScorer:
    """Score = distinct (dst_ip, dst_port) pairs of the flow's source in this window.

    Stateless across windows, so any two runs over the same windows agree exactly.
    """

    def __init__(self, threshold: float = 20.0, technique: str = "T1046", delay: float = 0.0) -> None:
        self.threshold = threshold
        self.technique = technique
        self.delay = delay  # seconds per window: lets crash tests kill a daemon mid-stream
        self.windows = 0

    def score_window(self, window):
        if self.delay:
            import time

            time.sleep(self.delay)
        t = window.table
        src = np.asarray(t.column("src_ip").to_pylist(), dtype=object)
        pairs = list(zip(t.column("dst_ip").to_pylist(), t.column("dst_port").to_pylist()))
        fan: dict = {}
        for s, p in zip(src, pairs):
            fan.setdefault(s, set()).add(p)
        scores = np.array([float(len(fan[s])) for s in src])
        alerts = scores > self.threshold
        self.windows += 1
        return Scores(
            rows=t.column("row").to_numpy().astype(np.int64), scores=scores, alerts=alerts,
            top_technique=[self.technique if a else None for a in alerts],
            node_scores=np.zeros(0), node_key=[], window_start=window.start, window_end=window.end,
            threshold=self.threshold,
        )


def write_fanout_model(d: Path, threshold: float = 20.0, technique: str = "T1046", version: str = "v1",
                       delay: float = 0.0) -> Path:
    """A model directory for :func:`load_fanout` (config.json written last, like a real bundle)."""
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / "config.json.tmp"
    tmp.write_text(json.dumps({"threshold": threshold, "technique": technique, "version": version,
                               "delay": delay}))
    tmp.replace(d / "config.json")
    return d


def load_fanout(path):
    """``model.loader`` plugin: ``daemon_helpers:load_fanout`` reads a write_fanout_model directory."""
    from detector.daemon import LoadedModel, resolve_model_dir

    d = resolve_model_dir(path)
    cfg = json.loads((d / "config.json").read_text())
    return LoadedModel(FanoutScorer(cfg["threshold"], cfg["technique"], cfg.get("delay", 0.0)), cfg["version"], cfg["threshold"], str(d))


def reference_alerts(table: pa.Table, size: float, lateness: float, scorer=None) -> list[dict]:
    """Alerts from windowing ``table`` directly and scoring each window (what the daemon must match)."""
    from detector.alerts import build_alerts
    from ingest.windows import EventTimeWindower, Tumbling

    scorer = scorer or FanoutScorer()
    w = EventTimeWindower(Tumbling(size), lateness=lateness)
    out: list[dict] = []
    for win in w.push(table) + w.flush():
        out += build_alerts(win, scorer.score_window(win)).alerts
    return out


# --- long-horizon behaviour state (tests/detector/test_daemon_behaviour_state.py) -----------------------

BEACON_SRC, BEACON_DST = "10.0.0.99", "198.51.100.7"


def write_beacon_zeek(path: Path, span: float = 7200.0, seed: int = 1, t0: float = T0) -> Path:
    """A Zeek conn.log (TSV with #fields/#types): a 60 s beacon (jitter +-0.5 s) from BEACON_SRC to
    BEACON_DST:443 over ``span`` seconds among 30 Poisson client->server pairs (mean gap 90 s), in time order."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(int(span // 60)):
        rows.append((t0 + 5 + 60 * i + rng.uniform(-0.5, 0.5), BEACON_SRC, BEACON_DST, 443, "tcp", "ssl",
                     int(rng.integers(200, 400)), int(rng.integers(300, 900))))
    servers = [("93.184.216.34", 443, "tcp", "ssl"), ("8.8.8.8", 53, "udp", "dns"), ("151.101.1.69", 80, "tcp", "http")]
    for p in range(30):
        dst, port, proto, svc = servers[p % len(servers)]
        t = t0 + rng.exponential(90.0)
        while t < t0 + span:
            rows.append((t, f"10.0.1.{p + 1}", dst, port, proto, svc, int(rng.lognormal(6, 0.5)),
                         int(rng.lognormal(8, 0.7))))
            t += rng.exponential(90.0)
    rows.sort(key=lambda r: r[0])
    fields = ["ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "service", "duration",
              "orig_bytes", "resp_bytes", "conn_state", "history", "orig_pkts", "resp_pkts"]
    types = ["time", "string", "addr", "port", "addr", "port", "enum", "string", "interval", "count", "count",
             "string", "string", "count", "count"]
    lines = ["#separator \\x09", "#set_separator\t,", "#empty_field\t(empty)", "#unset_field\t-", "#path\tconn",
             "#fields\t" + "\t".join(fields), "#types\t" + "\t".join(types)]
    for i, (t, s, d, port, proto, svc, ob, rb) in enumerate(rows):
        lines.append("\t".join([f"{t:.6f}", f"B{i:06d}", s, str(int(rng.integers(30000, 60000))), d, str(port), proto,
                                svc, "0.500000", str(ob), str(rb), "SF", "ShADadFf", "2", "2"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def read_flows(path) -> pa.Table:
    """The canonical flow table of an input file, through the project's readers."""
    from ingest.readers import open_inputs

    return pa.Table.from_batches(list(open_inputs([str(path)])))


def load_recording_bundle(path):
    """``model.loader`` plugin: a real model bundle (as ``default_loader`` loads it) whose StreamScorer also
    appends, per scored window, one JSON line ``{"uid": [...], "scores": [[...], ...]}`` (each flow's
    behaviour technique scores, ``WindowScores.behaviour_scores``) to ``$GRAPHSENTRY_TEST_BEHAVIOUR_LOG``;
    ``$GRAPHSENTRY_TEST_WINDOW_DELAY`` seconds of sleep per window let a test kill the daemon mid-stream."""
    import os
    import time

    from detector.daemon import default_loader
    from detector.scoring import StreamScorer

    out = os.environ.get("GRAPHSENTRY_TEST_BEHAVIOUR_LOG")
    delay = float(os.environ.get("GRAPHSENTRY_TEST_WINDOW_DELAY") or 0)

    class RecordingScorer(StreamScorer):
        def _record(self, windows, results) -> None:
            if delay:
                time.sleep(delay * len(windows))
            if not out:
                return
            with open(out, "a") as f:
                for w, ws in zip(windows, results):
                    if isinstance(ws, BaseException) or ws.behaviour_scores is None or not len(ws.rows):
                        continue
                    uid = w.table.column("uid").to_pylist()  # index i of the results is row i of the table
                    f.write(json.dumps({"uid": uid, "scores": np.asarray(ws.behaviour_scores).tolist()}) + "\n")
                f.flush()

        def score_window(self, window):
            ws = super().score_window(window)
            self._record([window], [ws])
            return ws

        def score_windows(self, windows, return_exceptions: bool = False):
            res = super().score_windows(windows, return_exceptions=return_exceptions)
            self._record(windows, res)
            return res

    m = default_loader(path)
    m.scorer = RecordingScorer(m.scorer.bundle)
    return m


def read_behaviour_log(path: Path) -> list[dict]:
    """The windows a :func:`load_recording_bundle` scorer wrote: ``{uid: scores tuple}`` per window, in order
    (a line cut short by a kill is skipped)."""
    out = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        out.append({u: tuple(s) for u, s in zip(rec["uid"], rec["scores"])})
    return out


# --- the retraining archive (tests/detector/test_daemon_archive.py) -----------------------------------------


def read_archived(root) -> pa.Table:
    """Every record of the archive at ``root`` (all columns), through ``ingest.archive.read_archive``."""
    from ingest.archive import archive_schema, read_archive

    batches = list(read_archive(root))
    return pa.Table.from_batches(batches) if batches else archive_schema().empty_table()


def archived_positions(t: pa.Table) -> list[tuple]:
    """``(kafka_topic, kafka_partition, kafka_offset, kafka_index)`` of each archived record, in table order."""
    return list(zip(*(t.column(c).to_pylist() for c in ("kafka_topic", "kafka_partition", "kafka_offset",
                                                          "kafka_index"))))


def topic_positions(bootstrap: str, topic: str) -> dict[tuple, str]:
    """``{(topic, partition, offset, index): uid}`` of every record in ``topic``, decoded message by message
    (JSON: index 0; Arrow IPC: the record's index in its message); undecodable messages are left out."""
    from ingest.kafka_io import decode_messages, iter_topic

    out: dict[tuple, str] = {}
    for m in iter_topic(bootstrap, topic, idle_s=1.5):
        uids = decode_messages([m.value], "auto", "flows").table.column("uid").to_pylist()
        for i, u in enumerate(uids):
            out[(m.topic, m.partition, m.offset, i)] = u
    return out


REPO = Path(__file__).resolve().parents[2]


def serve_process(cfg: Path, log: Path, extra_env: dict | None = None) -> subprocess.Popen:
    """``graphsentry serve --config CFG`` in a child process (these helpers importable by its loaders),
    its output in ``log``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "detector"), os.environ.get("PYTHONPATH", "")]),
           **(extra_env or {})}
    return subprocess.Popen([sys.executable, "-m", "training.cli", "-v", "serve", "--config", str(cfg)], cwd=REPO,
                            env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def log_tail(log: Path, n: int = 40) -> str:
    """The last ``n`` lines of a child's log (for assertion messages)."""
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:]) if log.exists() else ""

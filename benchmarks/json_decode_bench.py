"""JSON decoders on one poll of flow messages: wall time and GIL time per poll (reports/json_decode_bench.json).

The daemon's source thread shares the GIL with the Kafka client's pure-Python record parsing, so what
decoding costs the pipeline on 2 cores is the time it *holds the GIL*, not its wall time. Each decoder
decodes one poll of ``--messages`` flow messages (``benchmarks/serve_bench.py::gen_flows``, written as
``table_to_json_messages`` writes them) into the canonical table:

* ``whole_poll``: :func:`ingest.kafka_io.json_batch.decode_json_batch` (pyarrow.json on the joined payloads);
* ``per_message_orjson``: the same with ``fast=False`` (orjson per message, ``Table.from_pylist``);
* ``per_message_msgspec`` / ``per_message_stdlib``: msgspec's / the standard library's parser per message,
  then the same records-to-table step (``records_batch``);
* ``whole_poll_iso_ts``, ``whole_poll_1pct_bad``, ``per_message_orjson_1pct_bad``: ISO-8601 ``ts`` strings,
  and 1% bad messages spread over the poll (half not JSON, half a ``ts`` no rule reads).

Figures per decoder (keys under ``decoders.<name>``): ``wall_ms`` (best of the solo runs) and
``wall_ms_median``; ``cpu_ms``, the decoding thread's CPU time per poll (median); ``gil_ms``, that CPU time
less the time inside ``pyarrow.json.read_json`` (which parses in the calling thread without the GIL):
an upper bound of the GIL time per poll, as the numpy and pyarrow.compute calls around it, also without
the GIL for most of their work, count as holding it; ``gil_share_of_cpu`` and ``gil_us_per_message``.
A second measure that needs no such accounting but is noisy on a busy machine: a pure-Python busy loop in a
second thread keeps ``busy_thread_kept_share`` of its solo rate while the decoder runs in a loop, so
``busy_thread_lost_ms_per_poll`` = (1 - kept share) x run time / polls (medians of three rounds, each
rate measured just before its round; the other load of a shared machine moves both); ``wall_ms_beside_busy_thread`` is
a poll's wall time while it has to win the GIL back from that thread. ``arrow_read_options`` times
``pyarrow.json.read_json`` alone with and without threads and at two block sizes (the choice in
``json_batch._arrow``); ``small_polls`` gives CPU and GIL microseconds of both paths on polls of 16, 32, 64
and 256 messages (the whole-poll path's fixed cost sets ``json_batch.FAST_MIN``). ``load_avg_1m_at_start`` says
how busy the machine was.

    .venv/bin/python benchmarks/json_decode_bench.py                 # ~30 s
    .venv/bin/python benchmarks/json_decode_bench.py --seconds 0.5   # quicker, noisier
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import orjson  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.json as pajson  # noqa: E402
from serve_bench import gen_flows  # noqa: E402

from ingest.kafka_io import json_batch, table_to_json_messages  # noqa: E402
from ingest.kafka_io.json_batch import _OPTIONS, _fast_rows, decode_json_batch, records_batch  # noqa: E402


def busy_rate(seconds: float) -> float:
    """Iterations per second of the busy loop running alone."""
    out: list = []
    stop = [False]
    th = threading.Thread(target=_busy, args=(stop, out))
    th.start()
    time.sleep(seconds)
    stop[0] = True
    th.join()
    return out[0] / out[1]


def _busy(stop: list, out: list) -> None:
    n, t0 = 0, time.perf_counter()
    while not stop[0]:
        for _ in range(200):
            pass
        n += 1
    out += [n, time.perf_counter() - t0]


_NOGIL = [0.0]
_READ_JSON = pajson.read_json


def _timed_read_json(*args, **kwargs):
    """``pyarrow.json.read_json``, its CPU time in this thread counted as time without the GIL (with
    ``use_threads=False`` on an in-memory buffer it parses in the calling thread, inside ``nogil``)."""
    c = time.thread_time()
    try:
        return _READ_JSON(*args, **kwargs)
    finally:
        _NOGIL[0] += time.thread_time() - c


pajson.read_json = _timed_read_json


def measure(f, seconds: float, reps: int, rounds: int = 3) -> dict:
    """Solo wall/CPU per poll, then ``f`` in a loop for ``seconds`` beside the busy thread."""
    f()
    walls, cpus, nogil = [], [], []
    for _ in range(reps):
        c, t, g = time.thread_time(), time.perf_counter(), _NOGIL[0]
        f()
        walls.append(time.perf_counter() - t)
        cpus.append(time.thread_time() - c)
        nogil.append(_NOGIL[0] - g)
    kept, lost, beside, polls = [], [], [], 0
    for _ in range(rounds):  # solo rate and the run beside it alternate: the machine's other load drifts
        solo_rate = busy_rate(0.2)
        out: list = []
        stop = [False]
        th = threading.Thread(target=_busy, args=(stop, out))
        th.start()
        time.sleep(0.02)
        k = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds / rounds:
            t = time.perf_counter()
            f()
            beside.append(time.perf_counter() - t)
            k += 1
        run = time.perf_counter() - t0
        stop[0] = True
        th.join()
        kept.append(min(1.0, (out[0] / out[1]) / solo_rate))
        lost.append((1.0 - kept[-1]) * run / k)
        polls += k
    cpu = statistics.median(cpus)
    gil = statistics.median([c - g for c, g in zip(cpus, nogil)])
    return {"wall_ms": round(min(walls) * 1e3, 2), "wall_ms_median": round(statistics.median(walls) * 1e3, 2),
            "cpu_ms": round(cpu * 1e3, 2), "gil_ms": round(gil * 1e3, 2), "gil_share_of_cpu": round(gil / cpu, 3),
            "busy_thread_kept_share": round(statistics.median(kept), 3),
            "busy_thread_lost_ms_per_poll": round(statistics.median(lost) * 1e3, 2),
            "wall_ms_beside_busy_thread": round(statistics.median(beside) * 1e3, 2),
            "polls_beside_busy_thread": polls}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=1.5, help="run time of each decoder beside the busy thread")
    ap.add_argument("--reps", type=int, default=15, help="solo runs per decoder")
    ap.add_argument("--out", default=str(REPO / "reports" / "json_decode_bench.json"))
    args = ap.parse_args()
    n = args.messages
    load = os.getloadavg()[0]
    vals = table_to_json_messages(gen_flows(n, 1_700_000_000.0, 2000.0))
    iso = [orjson.dumps({**rec, "ts": datetime.fromtimestamp(rec["ts"], timezone.utc).isoformat().replace(
        "+00:00", "Z")}) for rec in map(orjson.loads, vals)]
    bad = list(vals)
    for i in range(0, n, 100):  # 1% bad messages, spread out
        bad[i] = b'{"ts": "never", "src_ip": "10.0.0.1"}' if i % 200 else b"{broken"

    ref = decode_json_batch(vals, "flows", fast=False)
    got = decode_json_batch(vals, "flows")
    assert got[0].equals(ref[0]) and (got[1] == ref[1]).all(), "the whole-poll path differs from orjson per message"
    assert decode_json_batch(bad, "flows")[0].equals(decode_json_batch(bad, "flows", fast=False)[0])
    assert decode_json_batch(iso, "flows")[0].equals(decode_json_batch(iso, "flows", fast=False)[0])
    import msgspec

    dec = msgspec.json.Decoder()
    idx = list(range(n))
    decoders = {
        "whole_poll": lambda: decode_json_batch(vals, "flows"),
        "per_message_orjson": lambda: decode_json_batch(vals, "flows", fast=False),
        "per_message_msgspec": lambda: records_batch([dec.decode(v) for v in vals], idx, "flows"),
        "per_message_stdlib": lambda: records_batch([json.loads(v) for v in vals], idx, "flows"),
        "whole_poll_iso_ts": lambda: decode_json_batch(iso, "flows"),
        "per_message_orjson_iso_ts": lambda: decode_json_batch(iso, "flows", fast=False),
        "whole_poll_1pct_bad": lambda: decode_json_batch(bad, "flows"),
        "per_message_orjson_1pct_bad": lambda: decode_json_batch(bad, "flows", fast=False),
    }
    res: dict = {}
    for name, f in decoders.items():
        res[name] = measure(f, args.seconds, args.reps)
        res[name]["gil_us_per_message"] = round(res[name]["gil_ms"] * 1e3 / n, 3)
        print(f"{name:30s} " + "  ".join(f"{k} {v}" for k, v in res[name].items()), flush=True)
    joined = b"\n".join(vals)
    opts: dict = {}
    for threads in (False, True):
        for block in (1 << 18, 1 << 20):
            ro = pajson.ReadOptions(use_threads=threads, block_size=block)
            f = lambda ro=ro: _READ_JSON(pa.BufferReader(joined), read_options=ro,  # noqa: E731
                                               parse_options=_OPTIONS[("flows", "number")])
            m = measure(f, args.seconds / 2, args.reps)
            opts[f"threads_{str(threads).lower()}_block_{block >> 10}k"] = {
                k: m[k] for k in ("wall_ms", "wall_ms_median", "cpu_ms", "busy_thread_lost_ms_per_poll")}
    small: dict = {}
    json_batch.FAST_MIN, fast_min = 1, json_batch.FAST_MIN  # the whole-poll path below its threshold too
    for m in (16, 32, 64, 256):  # small polls: where the whole-poll path starts to pay (json_batch.FAST_MIN)
        for name, fast in (("whole_poll", True), ("per_message_orjson", False)):
            cpu, gil = [], []
            for _ in range(200):
                c, g = time.thread_time(), _NOGIL[0]
                decode_json_batch(vals[:m], "flows", fast=fast)
                cpu.append(time.thread_time() - c)
                gil.append(cpu[-1] - (_NOGIL[0] - g))
            small.setdefault(str(m), {})[name] = {"cpu_us": round(statistics.median(cpu) * 1e6),
                                                  "gil_us": round(statistics.median(gil) * 1e6)}
    json_batch.FAST_MIN = fast_min
    shares = {}
    for name, v in (("clean", vals), ("iso_ts", iso), ("1pct_bad", bad)):
        plan = _fast_rows(v, "flows")
        shares[name] = 0.0 if plan is None else round(plan[0].num_rows / n, 4)
    w, o = res["whole_poll"], res["per_message_orjson"]
    from training.report_meta import report_meta

    report = {**report_meta(), "load_avg_1m_at_start": round(load, 2), "messages": n, "poll_bytes": len(joined),
              "decoders": res, "arrow_read_options": opts,
              "small_polls": small,
              "whole_poll_share_of_messages": shares,
              "whole_poll_vs_per_message_orjson": {
                  "gil_us_per_message": [w["gil_us_per_message"], o["gil_us_per_message"]],
                  "cpu_ms": [w["cpu_ms"], o["cpu_ms"]],
                  "gil_ms_ratio": round(w["gil_ms"] / max(o["gil_ms"], 1e-9), 3),
                  "busy_thread_lost_ms_ratio": round(w["busy_thread_lost_ms_per_poll"]
                                                     / max(o["busy_thread_lost_ms_per_poll"], 1e-9), 3),
                  "wall_ms_ratio": round(w["wall_ms"] / max(o["wall_ms"], 1e-9), 3)}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("arrow_read_options", "small_polls", "whole_poll_share_of_messages",
                                             "whole_poll_vs_per_message_orjson")}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

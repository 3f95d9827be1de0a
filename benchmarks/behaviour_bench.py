"""Behaviour-state throughput: BehaviourState.update (all features) + the behaviour predicates, in flows/s
on one core, against a plain pyarrow read of the same table measured in the same run.

    .venv/bin/python benchmarks/behaviour_bench.py [--flows 1000000] [--batch 65536] [--repeat 3]
    .venv/bin/python benchmarks/behaviour_bench.py --input ../shared/data/flows/luflow/2020.07.08.zip

The synthetic stream (seeded) is 4 h of flows from ``--sources`` hosts to a Zipf-distributed population of
destinations, ports and connection states, in time order; ``--input`` reads real files with the project
readers instead. The stream goes through ``update`` in batches of ``--batch`` rows (windows, in event-time
order). Figures: best of ``--repeat`` runs, CPU time of this process (``time.process_time``) beside wall
time since the machine may be shared; the first run after import also compiles the kernels (numba cache),
so ``BehaviourState.warm_up()`` runs before timing.

Prints one JSON object (``--json`` writes it too): flows/s for ``read`` (``pyarrow.parquet.read_table`` of
the same table written to a temporary parquet file), ``update`` (behaviour features only), ``update+fired``
(features + predicates + fired technique lists), their ratio to ``read``, a breakdown of ``update``
(column extraction + keys, store lookups, kernels), store sizes and peak RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ingest.behaviour import BehaviourParams, BehaviourState  # noqa: E402
from ingest.behaviour import state as state_mod  # noqa: E402
from ingest.schema import FLOW_SCHEMA, conform  # noqa: E402
from knowledge.behaviour_predicates import fired  # noqa: E402


def synthetic(n: int, sources: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.uniform(0, 4 * 3600, n)) + 1_700_000_000
    src = rng.integers(0, sources, n)
    dst = rng.zipf(1.3, n) % 200_000
    ports = np.array([443, 80, 53, 22, 123, 8080, 4444, 3389, 25, 993], dtype=np.int32)
    port = np.where(rng.random(n) < 0.9, ports[rng.zipf(1.6, n) % len(ports)], rng.integers(1024, 65535, n))
    states = np.array(["SF", "S0", "REJ", "RSTO", "SH", "OTH", "S1"], dtype=object)
    t = pa.table({
        "row": np.arange(n, dtype=np.int64),
        "ts": pa.array((ts * 1e6).astype(np.int64)).cast(pa.timestamp("us", tz="UTC")),
        "src_ip": pa.array(np.char.add("10.0.", (src // 250).astype(str)).astype(object) + "." +
                           (src % 250).astype(str).astype(object), pa.string()),
        "dst_ip": pa.array(np.char.add("198.", (dst // 65536).astype(str)).astype(object) + "." +
                           ((dst // 256) % 256).astype(str).astype(object) + "." +
                           (dst % 256).astype(str).astype(object),
                           pa.string()),
        "dst_port": pa.array(port.astype(np.int32)),
        "proto": pa.array(np.where(np.isin(port, [53, 123]), "udp", "tcp").astype(object), pa.string()),
        "conn_state": pa.array(states[np.minimum(rng.zipf(2.0, n) - 1, len(states) - 1)], pa.string()),
        "src_bytes": pa.array(rng.lognormal(7, 2, n).astype(np.int64)),
        "dst_bytes": pa.array(rng.lognormal(8, 2, n).astype(np.int64)),
        "duration": pa.array(rng.exponential(2.0, n)),
    })
    return conform(t, FLOW_SCHEMA)


def from_files(paths: list[str]) -> pa.Table:
    from ingest.readers import open_inputs
    return pa.Table.from_batches(list(open_inputs(paths)))


def timed(fn) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


class Breakdown:
    """Wraps the stages of BehaviourState.update to time them (the same functions, only timed)."""

    def __init__(self):
        self.t = {"columns+keys": 0.0, "lookup": 0.0, "kernels": 0.0}
        self._orig = {}

    def __enter__(self):
        from ingest.behaviour import store as store_mod

        def wrap(mod, name, stage):
            fn = getattr(mod, name)
            self._orig[(mod, name)] = fn

            def timed_fn(*a, **k):
                c = time.process_time()
                try:
                    return fn(*a, **k)
                finally:
                    self.t[stage] += time.process_time() - c
            setattr(mod, name, timed_fn)

        wrap(state_mod, "batch_columns", "columns+keys")
        wrap(state_mod, "pair_update", "kernels")
        wrap(state_mod, "source_update", "kernels")
        wrap(state_mod, "service_update", "kernels")
        wrap(store_mod.EntityStore, "lookup", "lookup")
        return self

    def __exit__(self, *exc):
        for (mod, name), fn in self._orig.items():
            setattr(mod, name, fn)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--flows", type=int, default=1_000_000)
    ap.add_argument("--sources", type=int, default=5_000)
    ap.add_argument("--batch", type=int, default=65_536)
    ap.add_argument("--capacity", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--input", nargs="*", help="flow files (project readers) instead of the synthetic stream")
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args()

    table = from_files(args.input) if args.input else synthetic(args.flows, args.sources, args.seed)
    table = table.sort_by("ts") if args.input else table
    n = table.num_rows
    batches = [table.slice(i, args.batch) for i in range(0, n, args.batch)]
    params = BehaviourParams(capacity=args.capacity)
    BehaviourState.warm_up()  # compile / load the kernel cache before timing

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "flows.parquet")
        pq.write_table(table, path)
        read = [timed(lambda: pq.read_table(path)) for _ in range(args.repeat)]

    def run_update(with_fired: bool):
        st = BehaviourState(params)
        for b in batches:
            f = st.update(b)
            if with_fired:
                fired(f)
        return st

    upd = [timed(lambda: run_update(False)) for _ in range(args.repeat)]
    full = [timed(lambda: run_update(True)) for _ in range(args.repeat)]
    with Breakdown() as br:
        st = run_update(False)

    def rate(ts):  # best of the repeats, wall and CPU
        return {"wall_flows_per_s": round(n / min(t[0] for t in ts)),
                "cpu_flows_per_s": round(n / min(t[1] for t in ts))}

    r_read, r_upd, r_full = rate(read), rate(upd), rate(full)
    out = {
        "flows": n, "batch": args.batch, "capacity": args.capacity,
        "input": args.input or f"synthetic(seed={args.seed}, sources={args.sources})",
        "read": r_read, "update": r_upd, "update+fired": r_full,
        "ratio_update_to_read_cpu": round(r_upd["cpu_flows_per_s"] / r_read["cpu_flows_per_s"], 4),
        "ratio_update+fired_to_read_cpu": round(r_full["cpu_flows_per_s"] / r_read["cpu_flows_per_s"], 4),
        "update_cpu_s_breakdown": {k: round(v, 3) for k, v in br.t.items()},
        "store_sizes": st.sizes(),
        "store_array_bytes_at_capacity": st.memory_bytes(),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

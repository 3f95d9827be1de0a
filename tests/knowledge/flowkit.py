"""Hand-made windows in FLOW_SCHEMA for knowledge tests (no readers needed)."""
from __future__ import annotations

from typing import Callable

import pyarrow as pa

from ingest.schema import FLOW_SCHEMA, conform

T0 = 1_600_000_000.0


def flow(**kw) -> dict:
    """One flow with benign defaults: an established web request from an internal host."""
    d = dict(ts=T0, duration=1.0, src_ip="10.0.0.1", src_port=40000, dst_ip="10.0.0.2", dst_port=80,
             proto="tcp", service=None, conn_state="SF", history="ShADadFf", src_bytes=500, dst_bytes=5000,
             src_pkts=6, dst_pkts=7, syn_count=1, rst_count=0, entropy=None, label=0, attack=None, source="test")
    d.update(kw)
    if "src_ip_bytes" not in kw:
        d["src_ip_bytes"] = (d["src_bytes"] or 0) + 40 * (d["src_pkts"] or 0)
    if "dst_ip_bytes" not in kw:
        d["dst_ip_bytes"] = (d["dst_bytes"] or 0) + 40 * (d["dst_pkts"] or 0)
    return d


def many(n: int, f: Callable[[int], dict]) -> list[dict]:
    return [flow(**f(i)) for i in range(n)]


def table(rows: list[dict]) -> pa.Table:
    rows = [dict(r) for r in rows]
    for i, r in enumerate(rows):
        r["row"] = i
        r["ts"] = int(r["ts"] * 1e6)
    t = pa.Table.from_pylist(rows)
    t = t.set_column(t.schema.get_field_index("ts"), "ts", t.column("ts").cast(pa.timestamp("us", tz="UTC")))
    return conform(t, FLOW_SCHEMA)


def background() -> list[dict]:
    """A few ordinary internal flows: HTTPS to two servers, DNS via the local resolver."""
    rows = many(4, lambda i: dict(ts=T0 + 7 * i + (i * i) % 5, dst_ip=f"10.0.1.{i % 2 + 1}", dst_port=443,
                                  src_port=41000 + i, service="ssl"))
    rows += many(2, lambda i: dict(ts=T0 + 3 + 11 * i, dst_ip="10.0.0.53", dst_port=53, proto="udp",
                                   service="dns", conn_state="SF", src_bytes=40, dst_bytes=300, src_pkts=1,
                                   dst_pkts=1, src_port=53000 + i))
    return rows


def attack(rows: list[dict]) -> list[dict]:
    """Mark rows as the ones a predicate must fire on."""
    return [dict(r, attack="x", label=1) for r in rows]

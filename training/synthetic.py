"""Seeded synthetic flow records in the canonical schema (unit tests, benchmarks; never evaluations)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from ingest.schema import FLOW_SCHEMA, conform


def synthetic_flows(n_benign: int = 2000, n_attack: int = 200, duration: float = 1800.0, seed: int = 0,
                    t0: float = 1.7e9, attack_start: float = 0.5) -> pa.Table:
    """Benign clients talking to a few servers (web/dns/ntp) at regular rhythms, plus a port scan
    (one external source, many ports, tiny S0 flows) starting at ``attack_start`` of the span."""
    rng = np.random.default_rng(seed)
    clients = [f"10.0.0.{i}" for i in range(1, 21)]
    servers = [("93.184.216.34", 443, "tcp", "ssl"), ("8.8.8.8", 53, "udp", "dns"),
               ("151.101.1.69", 80, "tcp", "http"), ("162.159.200.1", 123, "udp", None)]
    rows = []
    for _ in range(n_benign):
        c = clients[rng.integers(len(clients))]
        s, port, proto, svc = servers[rng.integers(len(servers))]
        big = proto == "tcp"
        sb = int(rng.lognormal(6 if big else 4, 0.5))
        db = int(rng.lognormal(8 if big else 4.5, 0.7))
        rows.append(dict(ts=t0 + rng.uniform(0, duration), duration=float(rng.exponential(1.0 if big else 0.05)),
                         src_ip=c, src_port=int(rng.integers(30000, 60000)), dst_ip=s, dst_port=port,
                         proto=proto, service=svc, conn_state="SF", history="ShADadFf" if big else "Dd",
                         src_bytes=sb, dst_bytes=db, src_pkts=int(max(1, sb // 500)), dst_pkts=int(max(1, db // 500)),
                         src_ip_bytes=sb + 40, dst_ip_bytes=db + 40, label=0, attack=None))
    for _ in range(n_attack):
        rows.append(dict(ts=t0 + duration * attack_start + rng.uniform(0, duration * (1 - attack_start)),
                         duration=0.0, src_ip="203.0.113.66", src_port=int(rng.integers(40000, 41000)),
                         dst_ip=clients[rng.integers(len(clients))], dst_port=int(rng.integers(1, 65535)),
                         proto="tcp", service=None, conn_state="S0", history="S", src_bytes=0, dst_bytes=0,
                         src_pkts=1, dst_pkts=0, src_ip_bytes=44, dst_ip_bytes=0, label=1,
                         attack="PortScan"))
    rows.sort(key=lambda r: r["ts"])
    cols = {k: [r[k] for r in rows] for k in rows[0]}
    cols["ts"] = pa.array((np.array(cols["ts"]) * 1e6).astype("int64")).cast(pa.timestamp("us", tz="UTC"))
    cols["row"] = list(range(len(rows)))
    cols["uid"] = [f"S{i:06d}" for i in range(len(rows))]
    cols["source"] = ["synthetic"] * len(rows)
    t = pa.table({k: (v if isinstance(v, pa.Array) else pa.array(v)) for k, v in cols.items()})
    return conform(t, FLOW_SCHEMA)

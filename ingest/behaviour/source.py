"""Source host state: new-destination rate, upload/download volume, destination-port rarity, and the
host's last failure streak (for fallback detection).

Per source host the store keeps, updated flow by flow in event-time order:

* a decayed count of new destinations (a flow whose pair was not in the pair store: never seen,
  evicted, or silent longer than the horizon), ``tau_new_dst_s`` = 1 h: ~ new destinations per hour.
  The pair store is the bounded recent-destination set, so no separate sketch is needed;
* decayed sums of src_bytes and dst_bytes over all its pairs (``tau_bytes_s``);
* a bounded top-k of destination ports (port + protocol) with decayed counts (``tau_port_s`` = 1 day)
  and the decayed total of all its flows. A port not in the top-k is replaced into the entry with the
  smallest count (with count 1), so the k entries hold the host's habitual ports. A flow's port share
  is read *before* the flow is counted: a host's first use of a port has share 0;
* the length and time of its last failure streak on any pair.
"""
from __future__ import annotations

import numpy as np

from ingest.jit import jit

__all__ = ["source_fields", "SOURCE_FEATURES", "source_update"]

NAN = float("nan")


def source_fields(top_ports: int) -> dict:
    return {
        "last_ts": (np.float64, (), NAN), "n_flows": (np.float64, (), 0.0), "new_dst": (np.float64, (), 0.0),
        "up": (np.float64, (), 0.0), "down": (np.float64, (), 0.0),
        "ports": (np.int32, (top_ports,), -1), "port_count": (np.float32, (top_ports,), 0.0),
        "port_total": (np.float64, (), 0.0),
        "streak_len": (np.float64, (), 0.0), "streak_ts": (np.float64, (), NAN),
    }


SOURCE_FEATURES = (
    "src_new_dst_1h",     # decayed count of new destinations, ~ new destinations per hour (this flow included)
    "src_up_1h",          # decayed src_bytes of the host, ~ bytes uploaded per hour
    "src_down_1h",        # decayed dst_bytes of the host, ~ bytes downloaded per hour
    "src_port_share",     # decayed share of this port (+protocol) in the host's flows before this one
    "src_port_history",   # decayed number of the host's flows before this one (evidence behind the share)
    "src_port_coverage",  # share of the host's flows that its top-k ports cover (1 = a few habitual ports)
    "src_streak_len",     # length of the host's last failure streak (on any pair), before this flow
    "src_streak_age_s",   # seconds since that streak's last failure (age_cap_s if none)
)


def _source_kernel(rows, slot, ts, failed, up, down, port_key, pair_new, pair_streak, last_ts, n_flows,
                   new_dst, ups, downs, ports, port_count, port_total, streak_len, streak_ts, p,
                   out):  # pragma: no cover - numba
    horizon, tau_new, tau_bytes, tau_port, age_cap = p[0], p[1], p[2], p[3], p[4]
    k = ports.shape[1]
    for i in range(len(rows)):
        r = rows[i]
        s = slot[r]
        t = ts[r]
        if n_flows[s] == 0 or t - last_ts[s] > horizon:
            last_ts[s] = t
            n_flows[s] = 0.0
            new_dst[s] = 0.0
            ups[s] = 0.0
            downs[s] = 0.0
            port_total[s] = 0.0
            for j in range(k):
                ports[s, j] = -1
                port_count[s, j] = 0.0
            streak_len[s] = 0.0
            streak_ts[s] = np.nan
            dt = 0.0
        else:
            dt = t - last_ts[s]
            if dt < 0.0:
                dt = 0.0
            if t > last_ts[s]:
                last_ts[s] = t
        n_flows[s] += 1.0
        new_dst[s] = new_dst[s] * np.exp(-dt / tau_new) + pair_new[r]
        fb = np.exp(-dt / tau_bytes)
        ups[s] = ups[s] * fb + up[r]
        downs[s] = downs[s] * fb + down[r]
        # port top-k: decay, read the share, then count this flow
        fp = np.float32(np.exp(-dt / tau_port))
        port_total[s] *= np.exp(-dt / tau_port)
        pk = port_key[r]
        hit = -1
        low = 0
        covered = 0.0
        for j in range(k):
            port_count[s, j] *= fp
            covered += port_count[s, j]
            if ports[s, j] == pk:
                hit = j
            if port_count[s, j] < port_count[s, low]:
                low = j
        tot = port_total[s]
        share = port_count[s, hit] / tot if hit >= 0 and tot > 0.0 else 0.0
        out[3, r] = share
        out[4, r] = tot
        out[5, r] = min(covered / tot, 1.0) if tot > 0.0 else 0.0
        if hit >= 0:
            port_count[s, hit] += np.float32(1.0)
        else:
            ports[s, low] = pk
            port_count[s, low] = np.float32(1.0)
        port_total[s] += 1.0
        out[0, r] = new_dst[s]
        out[1, r] = ups[s]
        out[2, r] = downs[s]
        out[6, r] = streak_len[s]
        age = t - streak_ts[s]
        out[7, r] = min(max(age, 0.0), age_cap) if age == age else age_cap
        if failed[r]:
            streak_len[s] = pair_streak[r]
            streak_ts[s] = t


_kernel = jit(_source_kernel)


def source_update(arrays: dict, rows: np.ndarray, slot: np.ndarray, cols, params, pair_new: np.ndarray,
                  pair_streak: np.ndarray, out: np.ndarray) -> None:
    """Advance the sources of ``rows`` (event-time order); SOURCE_FEATURES into ``out`` [F, n].
    ``pair_new`` / ``pair_streak``: the pair features of the same rows (computed first)."""
    p = np.array([params.horizon_s, params.tau_new_dst_s, params.tau_bytes_s, params.tau_port_s, params.age_cap_s])
    a = arrays
    _kernel(rows, slot, cols.ts, cols.failed, cols.up, cols.down, cols.port_key.astype(np.int32, copy=False),
            pair_new, pair_streak, a["last_ts"], a["n_flows"], a["new_dst"], a["up"], a["down"], a["ports"],
            a["port_count"], a["port_total"], a["streak_len"], a["streak_ts"], p, out)

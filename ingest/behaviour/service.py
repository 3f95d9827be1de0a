"""Destination service state (``dst_ip|port/proto``): how often it is contacted and how often it fails.

Decayed flow and failure counts with ``tau_svc_s`` (10 min): a service that refuses everyone (a dead
C2 server, a closed port under a reconnect storm) has a failure share near 1, a live one near 0.
"""
from __future__ import annotations

import numpy as np

from ingest.jit import jit

__all__ = ["SERVICE_FIELDS", "SERVICE_FEATURES", "service_update"]

SERVICE_FIELDS = {
    "last_ts": (np.float64, (), float("nan")), "n_flows": (np.float64, (), 0.0),
    "flows": (np.float64, (), 0.0), "fails": (np.float64, (), 0.0),
}
SERVICE_FEATURES = (
    "svc_rate_10m",     # decayed flow count of the service (all sources), ~ flows in the last 10 minutes
    "svc_fail_share",   # decayed share of those flows that failed
)


def _service_kernel(rows, slot, ts, failed, last_ts, n_flows, flows, fails, p, out):  # pragma: no cover - numba
    horizon, tau = p[0], p[1]
    for i in range(len(rows)):
        r = rows[i]
        s = slot[r]
        t = ts[r]
        if n_flows[s] == 0 or t - last_ts[s] > horizon:
            last_ts[s] = t
            n_flows[s] = 0.0
            flows[s] = 0.0
            fails[s] = 0.0
            dt = 0.0
        else:
            dt = t - last_ts[s]
            if dt < 0.0:
                dt = 0.0
            if t > last_ts[s]:
                last_ts[s] = t
        f = np.exp(-dt / tau)
        n_flows[s] += 1.0
        flows[s] = flows[s] * f + 1.0
        fails[s] = fails[s] * f + (1.0 if failed[r] else 0.0)
        out[0, r] = flows[s]
        out[1, r] = fails[s] / flows[s]


_kernel = jit(_service_kernel)


def service_update(arrays: dict, rows: np.ndarray, slot: np.ndarray, cols, params, out: np.ndarray) -> None:
    """Advance the services of ``rows`` (event-time order); SERVICE_FEATURES into ``out`` [F, n]."""
    p = np.array([params.horizon_s, params.tau_svc_s])
    a = arrays
    _kernel(rows, slot, cols.ts, cols.failed, a["last_ts"], a["n_flows"], a["flows"], a["fails"], p, out)

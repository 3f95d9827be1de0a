"""Source->destination pair state: reconnection attempts, failure streak, inter-arrival regularity,
upload/download volume, transfer-size regularity.

Per pair (``src_ip|dst_ip``) the store keeps, updated flow by flow in event-time order:

* a decayed attempt count (``tau_rate_s`` = 60 s: ~ attempts in the last minute);
* the failure streak: consecutive failed flows (``columns.FAILED_STATES``), reset by any other flow;
* the gaps between arrivals (flows closer than ``min_gap_s`` are one arrival) as a running mean and
  variance (weight ``max(ew_alpha, 1/n)``: exact for the first 1/alpha gaps, then exponentially
  forgetting), hence their coefficient of variation (std / mean): ~1 for Poisson arrivals, ~0 for a beacon;
* the last ``LAGS`` gaps (a ring buffer) and, per lag L = 1..LAGS, the running mean of |gap - the gap L
  arrivals earlier|, each term capped at the mean gap (one missed beat or outage does not mask a pattern
  for long; Poisson arrivals give ~0.63 x the mean gap at every lag). It is small at some lag when the
  gaps repeat a pattern: a malware retry schedule such as 7 s, 8 s, 17 s, 48 s, again and again, has a
  high CV but a near-zero deviation at lag 4;
* decayed sums of src_bytes (up) and dst_bytes (down) (``tau_bytes_s`` = 1 h: ~ bytes per hour);
* the running mean and variance of src_bytes per flow (transfer-size regularity).

A pair silent for ``horizon_s`` starts over, and its next flow counts as a new destination.
"""
from __future__ import annotations

import numpy as np

from ingest.jit import jit

__all__ = ["PAIR_FIELDS", "PAIR_FEATURES", "pair_update"]

NAN = float("nan")
PAIR_FIELDS = {
    "last_ts": (np.float64, (), NAN), "first_ts": (np.float64, (), NAN), "arr_ts": (np.float64, (), NAN),
    "n_flows": (np.float64, (), 0.0), "n_gaps": (np.float64, (), 0.0),
    "gap_mean": (np.float64, (), 0.0), "gap_var": (np.float64, (), 0.0),
    "streak": (np.float64, (), 0.0), "rate": (np.float64, (), 0.0),
    "up": (np.float64, (), 0.0), "down": (np.float64, (), 0.0),
    "size_mean": (np.float64, (), 0.0), "size_var": (np.float64, (), 0.0),
    "ring": (np.float32, (4,), 0.0), "lag_dev": (np.float64, (4,), 0.0),
}
LAGS = 4
PAIR_FEATURES = (
    "pair_new",          # 1: first flow of this pair in the store (never seen, evicted, or silent > horizon)
    "pair_flows",        # flows of the pair so far, this one included
    "pair_age_s",        # seconds since the pair's first flow
    "pair_rate_1m",      # decayed attempt count, ~ attempts per minute
    "pair_fail_streak",  # consecutive failed flows ending with this one (0 if this one did not fail)
    "pair_gaps",         # inter-arrival gaps seen
    "pair_gap_mean_s",   # running mean gap
    "pair_gap_cv",       # std / mean of the gaps (1.0 until there are 2 gaps)
    "pair_gap_pattern",  # min over lags L of mean |gap - gap L earlier| / mean gap (1.0 until a lag has 2)
    "pair_gap_lag",      # the lag L where that minimum is (0 when none yet): 1 = a plain beacon
    "pair_up_1h",        # decayed src_bytes, ~ bytes uploaded per hour
    "pair_down_1h",      # decayed dst_bytes, ~ bytes downloaded per hour
    "pair_size_mean",    # running mean of src_bytes per flow
    "pair_size_cv",      # std / mean of src_bytes per flow (0 when the mean is 0)
)


def _pair_kernel(rows, slot, ts, failed, up, down, last_ts, first_ts, arr_ts, n_flows, n_gaps, gap_mean,
                 gap_var, streak, rate, ups, downs, size_mean, size_var, ring, lag_dev, p,
                 out):  # pragma: no cover - numba
    horizon, min_gap, alpha, tau_rate, tau_bytes = p[0], p[1], p[2], p[3], p[4]
    for i in range(len(rows)):
        r = rows[i]
        s = slot[r]
        t = ts[r]
        new = n_flows[s] == 0 or t - last_ts[s] > horizon
        if new:
            first_ts[s] = t
            arr_ts[s] = t
            last_ts[s] = t
            n_flows[s] = 0.0
            n_gaps[s] = 0.0
            gap_mean[s] = 0.0
            gap_var[s] = 0.0
            streak[s] = 0.0
            rate[s] = 0.0
            ups[s] = 0.0
            downs[s] = 0.0
            size_mean[s] = 0.0
            size_var[s] = 0.0
            for j in range(ring.shape[1]):
                ring[s, j] = 0.0
                lag_dev[s, j] = 0.0
            dt = 0.0
        else:
            dt = t - last_ts[s]
            if dt < 0.0:
                dt = 0.0
            g = t - arr_ts[s]
            if g >= min_gap:
                n_gaps[s] += 1.0
                a = max(alpha, 1.0 / n_gaps[s])
                d = g - gap_mean[s]
                inc = a * d
                gap_mean[s] += inc
                gap_var[s] = (1.0 - a) * (gap_var[s] + d * inc)
                arr_ts[s] = t
                k = int(n_gaps[s])  # this gap is number k - 1 (0-based), at ring[(k - 1) % L]
                nl = ring.shape[1]
                for lag in range(1, nl + 1):
                    if k > lag:
                        a = max(alpha, 1.0 / (k - lag))
                        dev = min(abs(g - ring[s, (k - 1 - lag) % nl]), gap_mean[s])  # one outlier counts <= 1 mean
                        lag_dev[s, lag - 1] += a * (dev - lag_dev[s, lag - 1])
                ring[s, (k - 1) % nl] = g
            if t > last_ts[s]:
                last_ts[s] = t
        rate[s] = rate[s] * np.exp(-dt / tau_rate) + 1.0
        fb = np.exp(-dt / tau_bytes)
        ups[s] = ups[s] * fb + up[r]
        downs[s] = downs[s] * fb + down[r]
        if failed[r]:
            streak[s] += 1.0
        else:
            streak[s] = 0.0
        n_flows[s] += 1.0
        a = max(alpha, 1.0 / n_flows[s])
        d = up[r] - size_mean[s]
        inc = a * d
        size_mean[s] += inc
        size_var[s] = (1.0 - a) * (size_var[s] + d * inc)
        out[0, r] = 1.0 if new else 0.0
        out[1, r] = n_flows[s]
        out[2, r] = t - first_ts[s]
        out[3, r] = rate[s]
        out[4, r] = streak[s]
        out[5, r] = n_gaps[s]
        out[6, r] = gap_mean[s]
        out[7, r] = np.sqrt(gap_var[s]) / gap_mean[s] if n_gaps[s] >= 2.0 and gap_mean[s] > 0.0 else 1.0
        best = 1.0
        best_lag = 0.0
        if gap_mean[s] > 0.0:
            for lag in range(1, ring.shape[1] + 1):
                if n_gaps[s] - lag >= 2.0 and lag_dev[s, lag - 1] / gap_mean[s] < best:
                    best = lag_dev[s, lag - 1] / gap_mean[s]
                    best_lag = lag
        out[8, r] = best
        out[9, r] = best_lag
        out[10, r] = ups[s]
        out[11, r] = downs[s]
        out[12, r] = size_mean[s]
        out[13, r] = np.sqrt(size_var[s]) / size_mean[s] if size_mean[s] > 0.0 else 0.0


_kernel = jit(_pair_kernel)


def pair_update(arrays: dict, rows: np.ndarray, slot: np.ndarray, cols, params, out: np.ndarray) -> None:
    """Advance the pairs of ``rows`` (in event-time order) and write PAIR_FEATURES into ``out`` [F, n]."""
    p = np.array([params.horizon_s, params.min_gap_s, params.ew_alpha, params.tau_rate_s, params.tau_bytes_s])
    a = arrays
    _kernel(rows, slot, cols.ts, cols.failed, cols.up, cols.down, a["last_ts"], a["first_ts"], a["arr_ts"],
            a["n_flows"], a["n_gaps"], a["gap_mean"], a["gap_var"], a["streak"], a["rate"], a["up"], a["down"],
            a["size_mean"], a["size_var"], a["ring"], a["lag_dev"], p, out)

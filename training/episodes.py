"""Attack episodes: what an analyst sees as "one attack", and whether / how fast it was alerted on.

An *episode* is one attacker -> victim pair ``(src_ip, dst_ip)`` within one hour: the malicious flows
(label == 1) of a pair, in event-time order, are cut into episodes; an episode starts at its first flow
and takes every later flow of the pair less than ``horizon`` seconds (default 3600) after that start; the
next flow of the pair opens a new episode. Benign, background and unlabelled flows belong to no episode.

An episode is *detected* when any of its flows is flagged (score above the operating threshold; an
unscored flow is never flagged). Its *time to first alert* is the event time of its first flagged flow
minus the event time of its first flow (0 when the first flow is flagged).
"""
from __future__ import annotations

import numpy as np

HORIZON_S = 3600.0


def episode_ids(ts_s: np.ndarray, src, dst, labels: np.ndarray, horizon: float = HORIZON_S) -> np.ndarray:
    """Episode id per flow (``-1`` for flows that are not malicious). Ids are ``0..n-1`` in the order of
    (pair first seen in time, episode start)."""
    ts = np.asarray(ts_s, dtype=np.float64)
    lab = np.asarray(labels)
    out = np.full(len(ts), -1, dtype=np.int64)
    mal = np.flatnonzero(lab == 1)
    if len(mal) == 0:
        return out
    src = np.asarray(src, dtype=object)[mal]
    dst = np.asarray(dst, dtype=object)[mal]
    order = mal[np.lexsort((mal, ts[mal]))]            # malicious flows in time order (stable on position)
    pos = {int(i): k for k, i in enumerate(mal)}
    current: dict[tuple, tuple[int, float]] = {}       # pair -> (episode id, episode start)
    nxt = 0
    for i in order:
        k = pos[int(i)]
        pair = (src[k], dst[k])
        t = ts[i]
        ep = current.get(pair)
        if ep is None or not (t - ep[1] < horizon):
            ep = (nxt, t)
            current[pair] = ep
            nxt += 1
        out[i] = ep[0]
    return out


def episode_metrics(ts_s: np.ndarray, src, dst, labels: np.ndarray, flagged: np.ndarray,
                    horizon: float = HORIZON_S) -> dict:
    """Episodes detected and time to first alert.

    Returns ``n_episodes``, ``n_detected``, ``episode_recall`` (None without episodes), and over the
    detected episodes ``ttfa_median_s``, ``ttfa_p90_s``, ``ttfa_max_s`` (None when none was detected)."""
    ts = np.asarray(ts_s, dtype=np.float64)
    flag = np.asarray(flagged, dtype=bool)
    ids = episode_ids(ts, src, dst, labels, horizon)
    n = int(ids.max()) + 1 if (ids >= 0).any() else 0
    out: dict = {"episode_horizon_s": horizon, "n_episodes": n, "n_detected": 0, "episode_recall": None,
                 "ttfa_median_s": None, "ttfa_p90_s": None, "ttfa_max_s": None}
    if n == 0:
        return out
    sel = ids >= 0
    e, t, f = ids[sel], ts[sel], flag[sel]
    start = np.full(n, np.inf)
    np.minimum.at(start, e, t)
    first_alert = np.full(n, np.inf)
    np.minimum.at(first_alert, e[f], t[f])
    det = np.isfinite(first_alert)
    ttfa = first_alert[det] - start[det]
    out["n_detected"] = int(det.sum())
    out["episode_recall"] = float(det.mean())
    if det.any():
        out["ttfa_median_s"] = float(np.median(ttfa))
        out["ttfa_p90_s"] = float(np.quantile(ttfa, 0.9))
        out["ttfa_max_s"] = float(ttfa.max())
    return out

"""Warm-up of a loaded model before it serves: its one-time costs paid before the first real window.

:func:`warm_up` (also :meth:`StreamScorer.warm_up`) runs, on a throwaway scorer of the same bundle (its own
node memory, graph stream and behaviour state: the serving scorer's state is not touched), one synthetic
window of ``flows`` flows (default :data:`WARM_FLOWS`) through ``score_window`` — numba's load of the
compiled kernels, the forest layout and kNN bank, the threaded detector paths, the first torch calls, and
the heap grown to a large window's buffers (measured: the first 50,000-flow window took 0.70-0.76 CPU-s
after a 4,500-flow warm-up, 0.55-0.61 after a 50,000-flow one, later windows ~0.5) — and builds findings for a few of its flows with their explanations (:func:`detector.alerts.build_alerts`:
the ATT&CK tables, the alert modules). Nothing is written anywhere and no incident tracker sees them.

With ``freeze_heap`` it then moves every object alive (the model, torch, numba, scikit-learn: about half a
million) into the collector's permanent generation (:func:`gc.freeze`), after one full collection. A full
cyclic collection otherwise re-scans all of them — 0.25-0.3 s, measured with the default model, wherever
it happens to run (a window's scoring or its alert build) — while serving only creates objects that are
freed by reference counting or scanned cheaply. Call it once the model is loaded (again after a hot
reload: the full collection first frees what the old model left in cycles).
"""
from __future__ import annotations

import dataclasses
import gc
import logging
import time

import numpy as np

log = logging.getLogger(__name__)

WARM_FLOWS = 50_000  # a busy window (10k records/s, 5 s windows); > 2 x 2048 rows: the detectors' threaded paths
WARM_ALERTS = 8    # flows given findings (explanations included)


def warm_flows(n: int = WARM_FLOWS, t0: float = 0.0):
    """``n`` synthetic flows in FLOW_SCHEMA over five seconds from ``t0``: 200 sources, 40 servers, a few ports."""
    import pyarrow as pa

    from ingest.schema import FLOW_SCHEMA, conform

    i = np.arange(n)
    src, dst = i % 200, (i * 7) % 40
    t = pa.table({
        "row": pa.array(i, pa.int64()),
        "uid": pa.array([f"W{k}" for k in range(n)]),
        "ts": pa.array(((t0 + 5.0 * i / max(n, 1)) * 1e6).astype(np.int64)).cast(pa.timestamp("us", tz="UTC")),
        "duration": pa.array((i % 13) / 4.0),
        "src_ip": pa.array([f"10.0.{s // 256}.{s % 256}" for s in src.tolist()]),
        "src_port": pa.array((40000 + i % 20000).astype(np.int32)),
        "dst_ip": pa.array([f"10.1.0.{d}" for d in dst.tolist()]),
        "dst_port": pa.array(np.array([80, 443, 53, 22, 8080])[i % 5].astype(np.int32)),
        "proto": pa.array(np.where(i % 4 == 0, "udp", "tcp")),
        "conn_state": pa.array(np.where(i % 9 == 0, "S0", "SF")),
        "src_bytes": pa.array((i * 37) % 5000),
        "dst_bytes": pa.array((i * 91) % 50000),
        "src_pkts": pa.array(1 + i % 40),
        "dst_pkts": pa.array(i % 50),
    })
    return conform(t, FLOW_SCHEMA)


def warm_up(scorer, networks=None, freeze_heap: bool = True, flows: int = WARM_FLOWS, factory=None) -> float:
    """Pay ``scorer``'s one-time costs now (see the module docstring); the seconds it took. ``networks``: the
    internal networks the alert build will use (:class:`detector.alerts.severity.Networks`); ``flows``: the
    synthetic window's size (about the largest window expected); ``factory(bundle, behaviour=...)`` makes the
    throwaway scorer (default: the scorer's own type; :meth:`StreamScorer.warm_up` passes the plain
    :class:`~detector.scoring.StreamScorer`, so a subclass's side effects do not see the synthetic window). A scorer
    that is not a
    :class:`~detector.scoring.StreamScorer` (a plugin's) gets the imports and the heap freeze only.
    Never raises: a real problem shows when scoring."""
    start = time.perf_counter()
    try:
        import pyarrow.compute  # noqa: F401 - the alert build's first use

        from detector.alerts import attack
        from detector.alerts.ocsf import build_alerts
        from ingest.windows import Window

        attack._tables()  # the ATT&CK names and tactics (the knowledge artifact, read once)
        if hasattr(scorer, "bundle") and hasattr(scorer, "behaviour_enabled"):  # a StreamScorer (no import: circle)
            beh = scorer.behaviour_params if scorer.behaviour_params is not None else scorer.behaviour_enabled
            twin = (factory or type(scorer))(scorer.bundle, behaviour=beh)  # its own state: nothing carries over
            window = Window(0.0, 5.0, warm_flows(max(int(flows), 1)))
            ws = twin.score_window(window)
            if len(ws.alerts):  # findings for a few flows, whatever their scores
                flagged = np.zeros(len(ws.alerts), dtype=bool)
                flagged[:WARM_ALERTS] = True
                build_alerts(window, dataclasses.replace(ws, alerts=flagged), threshold=ws.threshold, now=0.0,
                             networks=networks)
    except Exception as exc:  # noqa: BLE001 - only an optimisation
        log.debug("warm-up failed: %r", exc)
    if freeze_heap:
        gc.unfreeze()  # what an earlier warm-up froze (a reloaded model's predecessor) is collectable again
        gc.collect()
        gc.freeze()
    return time.perf_counter() - start

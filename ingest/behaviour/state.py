"""BehaviourState: per-entity state across windows, and the per-flow behaviour features derived from it.

Today every window is scored on its own, so behaviour that only shows over minutes to hours (a beacon
every 60 s, a RAT retrying a refused server every second, a slow steady upload) is invisible. This class
keeps bounded state per source host, per source->destination pair and per destination service
(:mod:`ingest.behaviour.pair`, :mod:`.source`, :mod:`.service`, each in an
:class:`~ingest.behaviour.store.EntityStore` of ``capacity`` keys) and returns, for every flow of a batch,
the features of its entities *after* that flow, computed in event-time order.

How the scorer uses it (the model's input width does not change; this is a side channel)::

    state = BehaviourState(BehaviourParams(capacity=200_000))   # or BehaviourState.load(dir)
    for window in windows:                       # windows in event-time order; every flow fed ONCE
        feats = state.update(window.table)       # (tumbling windows; with sliding ones, only the new rows)
                                                 # -> pyarrow.Table, one row per flow, same order
        techs = knowledge.behaviour_predicates.fired(feats)   # per-flow ATT&CK ids (list<string>)
        # -> attach `techs` (and the predicate activations) to each alert's explanation, and raise a
        #    flow's alert score with behaviour_predicates.technique_scores(feats).max(axis=1) if wanted
    state.save(dir)                              # at each checkpoint, with the daemon's offsets

Semantics: within a batch, rows are processed in order of ``ts`` (stable: equal times keep input
order). ``update(A); update(B)`` equals ``update(A + B)`` whenever B's flows are not earlier than A's
(as consecutive windows are) and no key was evicted in between; a flow earlier than its entity's last
flow is taken as simultaneous with it (no negative gaps). The first update in a fresh environment
compiles the kernels (numba, cached on disk afterwards): a daemon calls :meth:`warm_up` at startup
(a throwaway state; its own state is untouched). Checkpoints (:meth:`state` /
:meth:`from_state`, :meth:`save` / :meth:`load`) are JSON + npz, no pickle, and restore exactly.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from ingest.behaviour.columns import batch_columns
from ingest.behaviour.pair import PAIR_FEATURES, PAIR_FIELDS, pair_update
from ingest.behaviour.params import BehaviourParams
from ingest.behaviour.service import SERVICE_FEATURES, SERVICE_FIELDS, service_update
from ingest.behaviour.source import SOURCE_FEATURES, source_fields, source_update
from ingest.behaviour.store import EntityStore

__all__ = ["BehaviourState", "FEATURE_NAMES", "FEATURES_SCHEMA"]

FEATURE_NAMES: tuple[str, ...] = ("flow_failed",) + PAIR_FEATURES + SOURCE_FEATURES + SERVICE_FEATURES
FEATURES_SCHEMA = pa.schema([pa.field(n, pa.float32(), nullable=False) for n in FEATURE_NAMES])
STATE_VERSION = 2  # 2: keys held as 64-bit hashes
KINDS = ("pair", "src", "svc")
_P0 = 1
_S0 = _P0 + len(PAIR_FEATURES)
_V0 = _S0 + len(SOURCE_FEATURES)


class BehaviourState:
    """Bounded per-entity behaviour state; :meth:`update` a flow batch, get its behaviour features."""

    def __init__(self, params: BehaviourParams | None = None):
        self.params = params or BehaviourParams()
        c = self.params.capacity
        self.stores = {"pair": EntityStore(c, PAIR_FIELDS), "src": EntityStore(c, source_fields(self.params.top_ports)),
                       "svc": EntityStore(c, SERVICE_FIELDS)}
        self.flows_seen = 0

    def __len__(self) -> int:
        """Keys held, all kinds together."""
        return sum(len(s) for s in self.stores.values())

    def sizes(self) -> dict[str, int]:
        return {k: len(s) for k, s in self.stores.items()}

    def update(self, table: pa.Table | pa.RecordBatch) -> pa.Table:
        """Advance the state by a batch of flows (FLOW_SCHEMA; needs ts, src_ip, dst_ip; uses dst_port,
        proto, conn_state, src_bytes, dst_bytes when present) and return its behaviour features:
        one float32 row per flow, in the batch's row order (:data:`FEATURE_NAMES`)."""
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        n = table.num_rows
        if n == 0:
            return FEATURES_SCHEMA.empty_table()
        cols = batch_columns(table, self.params.hash_seed)
        order = np.argsort(cols.ts, kind="stable")
        out = np.zeros((len(FEATURE_NAMES), n), dtype=np.float32)
        out[0] = cols.failed
        slots = {k: np.empty(n, dtype=np.int64) for k in KINDS}
        # at most capacity/2 rows per step: a step's keys always fit beside the keys it may not evict
        step = max(1, self.params.capacity // 2)
        for start in range(0, n, step):
            rows = order[start:start + step]
            for kind in KINDS:
                keys, inv = cols.keys[kind]
                if step >= n:  # the whole batch in one step (the usual case)
                    got, _ = self.stores[kind].lookup(keys)
                    slots[kind] = got[inv]
                else:
                    code = inv[rows]
                    used = np.unique(code)
                    got, _ = self.stores[kind].lookup(keys[used])
                    lut = np.full(len(keys), -1, dtype=np.int64)
                    lut[used] = got
                    slots[kind][rows] = lut[code]
            pair_update(self.stores["pair"].arrays, rows, slots["pair"], cols, self.params, out[_P0:_S0])
            source_update(self.stores["src"].arrays, rows, slots["src"], cols, self.params, out[_P0],
                          out[_P0 + PAIR_FEATURES.index("pair_fail_streak")], out[_S0:_V0])
            service_update(self.stores["svc"].arrays, rows, slots["svc"], cols, self.params, out[_V0:])
        self.flows_seen += n
        return pa.Table.from_arrays([pa.array(out[j]) for j in range(len(FEATURE_NAMES))], schema=FEATURES_SCHEMA)

    @staticmethod
    def warm_up() -> None:
        """Compile (or load from the numba cache) the kernels on a throwaway state of two flows."""
        ts = pa.array([0, 1_000_000], pa.int64()).cast(pa.timestamp("us", tz="UTC"))
        BehaviourState(BehaviourParams(capacity=4)).update(pa.table({
            "ts": ts, "src_ip": ["0.0.0.1", "0.0.0.1"], "dst_ip": ["0.0.0.2", "0.0.0.2"],
            "dst_port": pa.array([1, 1], pa.int32()), "proto": ["tcp", "tcp"], "conn_state": ["S0", "SF"],
            "src_bytes": [0, 1], "dst_bytes": [0, 1]}))

    def memory_bytes(self) -> dict[str, int]:
        """Bytes at full capacity per kind: field arrays, index and bookkeeping (``bytes_per_slot x capacity``)."""
        return {k: s.bytes_per_slot() * s.capacity for k, s in self.stores.items()}

    # ------------------------------------------------------------------ checkpoint (JSON + npz, no pickle)
    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """``(json_dict, arrays)``: everything :meth:`from_state` needs."""
        meta = {"version": STATE_VERSION, "params": self.params.to_json(), "flows_seen": self.flows_seen,
                "features": list(FEATURE_NAMES), "stores": {}}
        arrays: dict[str, np.ndarray] = {}
        for kind, store in self.stores.items():
            m, a = store.state(kind)
            meta["stores"][kind] = m
            arrays.update(a)
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict, arrays) -> BehaviourState:
        if meta.get("version") != STATE_VERSION:
            raise ValueError(f"behaviour state version {meta.get('version')!r}, expected {STATE_VERSION}")
        self = cls(BehaviourParams.from_json(meta["params"]))
        self.flows_seen = int(meta.get("flows_seen", 0))
        for kind, store in self.stores.items():
            store.load(kind, meta["stores"][kind], arrays)
        return self

    def save(self, directory: str | Path) -> None:
        """``behaviour.npz`` then ``behaviour.json`` in ``directory``, each written to a temporary name,
        fsynced, then renamed (a crash leaves the previous checkpoint or the new one, per file; the JSON
        carries ``flows_seen`` so a reader can tell a pair of files apart from a mixed one by comparing it
        with the npz's ``meta.flows_seen``)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        meta, arrays = self.state()
        arrays["meta.flows_seen"] = np.array([self.flows_seen], dtype=np.int64)
        for name, write in (("behaviour.npz", lambda f: np.savez(f, **arrays)),
                            ("behaviour.json", lambda f: f.write(json.dumps(meta, indent=1).encode()))):
            tmp = d / (name + ".tmp")
            with open(tmp, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, d / name)

    @classmethod
    def load(cls, directory: str | Path) -> BehaviourState:
        d = Path(directory)
        meta = json.loads((d / "behaviour.json").read_text())
        with np.load(d / "behaviour.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        seen = arrays.pop("meta.flows_seen", None)
        if seen is not None and int(seen[0]) != int(meta.get("flows_seen", -1)):
            raise ValueError(f"{d}: behaviour.json and behaviour.npz are from different checkpoints")
        return cls.from_state(meta, arrays)

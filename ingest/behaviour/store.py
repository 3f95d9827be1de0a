"""A bounded entity store: string key -> slot in fixed-size numpy arrays, least recently seen evicted.

One store holds one entity kind (a source host, a source->destination pair, a destination service).
Each field is a numpy array of ``capacity`` rows (plus a trailing shape, e.g. a host's top-k ports);
a key owns one row (its *slot*) while it is in the store. When new keys do not fit, the keys seen
least recently in event time (smallest ``last_ts``) go first, ties broken by key, so the choice never
depends on slot numbers (a restored store evicts exactly as the original would). The store never holds
more than ``capacity`` keys: :meth:`lookup` raises instead of growing.

Arrays are allocated with ``np.empty`` (untouched pages cost no memory) and a slot's row is set to the
field's initial value when the slot is handed out, so memory grows with the keys actually held, up to
``capacity`` x :meth:`bytes_per_slot` plus the key dictionary.
"""
from __future__ import annotations

from collections import deque
from itertools import repeat

import numpy as np

__all__ = ["EntityStore"]


class EntityStore:
    """``fields``: name -> (dtype, trailing shape, initial value); it must include ``last_ts``
    (float64 event time in seconds of the key's last flow, written by the caller), which orders eviction."""

    def __init__(self, capacity: int, fields: dict[str, tuple]):
        if capacity < 2:
            raise ValueError("capacity must be >= 2")
        if "last_ts" not in fields:
            raise ValueError("an entity store needs a last_ts field (eviction order)")
        self.capacity = int(capacity)
        self.fields = {name: (np.dtype(dt), tuple(shape), init) for name, (dt, shape, init) in fields.items()}
        self.arrays = {name: np.empty((self.capacity, *shape), dtype=dt)
                       for name, (dt, shape, _) in self.fields.items()}
        self._slot_of: dict[str, int] = {}
        self._key_of = np.full(self.capacity, None, dtype=object)  # slot -> key (None = free)
        self._live = np.zeros(self.capacity, dtype=bool)
        # free slots as a stack; the top is popped first (slot numbers carry no meaning)
        self._free = np.arange(self.capacity - 1, -1, -1, dtype=np.int64)
        self._n_free = self.capacity
        self.evicted = 0  # keys evicted since creation (a counter for monitoring)

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, key: str) -> bool:
        return key in self._slot_of

    def bytes_per_slot(self) -> int:
        """Bytes of field arrays per slot (the key dictionary comes on top, ~150 B per key)."""
        return int(sum(a.itemsize * int(np.prod(a.shape[1:], dtype=np.int64)) for a in self.arrays.values()))

    def lookup(self, keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(slot per key, True where the key was not held and got a fresh slot).

        ``keys`` must be distinct. Keys already held are never evicted by this call (they are in use);
        fresh slots start at each field's initial value. Raises ValueError when more keys are asked for
        than ``capacity`` holds at once.
        """
        slots = np.fromiter(map(self._slot_of.get, keys, repeat(-1)), dtype=np.int64, count=len(keys))
        miss = np.flatnonzero(slots < 0)
        m = len(miss)
        fresh = np.zeros(len(keys), dtype=bool)
        if not m:
            return slots, fresh
        if len(keys) > self.capacity:
            raise ValueError(f"{len(keys)} keys at once in a store of capacity {self.capacity}")
        if m > self._n_free:
            self._evict(m - self._n_free, slots[slots >= 0])
        new = self._free[self._n_free - m:self._n_free][::-1].copy()
        self._n_free -= m
        for name, (_, _, init) in self.fields.items():
            self.arrays[name][new] = init
        slots[miss] = new
        fresh[miss] = True
        self._live[new] = True
        fresh_keys = [keys[i] for i in miss.tolist()] if m < len(keys) else list(keys)
        self._slot_of.update(zip(fresh_keys, new.tolist()))
        self._key_of[new] = fresh_keys
        if len(self._slot_of) > self.capacity:  # pragma: no cover - an invariant, kept honest
            raise AssertionError("entity store over capacity")
        return slots, fresh

    def _evict(self, need: int, protect: np.ndarray) -> None:
        """Free ``need`` slots: the least recently seen keys outside ``protect``, ties by key."""
        live = self._live.copy()
        live[protect] = False
        cand = np.flatnonzero(live)
        if need > len(cand):
            raise ValueError(f"cannot free {need} slots: only {len(cand)} keys are evictable")
        lt = self.arrays["last_ts"][cand]
        if need < len(cand):
            thr = lt[np.argpartition(lt, need - 1)[need - 1]]
            below = cand[lt < thr]
            tie = cand[lt == thr]
            if len(below) + len(tie) > need:
                key_of = self._key_of
                tie = np.array(sorted(tie.tolist(), key=lambda s: key_of[s])[:need - len(below)], dtype=np.int64)
            victims = np.concatenate([below, tie])
        else:
            victims = cand
        deque(map(self._slot_of.pop, self._key_of[victims].tolist()), maxlen=0)  # delete, in a C loop
        self._key_of[victims] = None
        self._live[victims] = False
        self._free[self._n_free:self._n_free + len(victims)] = victims
        self._n_free += len(victims)
        self.evicted += len(victims)

    # ------------------------------------------------------------------ checkpoint (no pickle)
    def state(self, prefix: str) -> tuple[dict, dict[str, np.ndarray]]:
        """(JSON-able dict, arrays): the held keys as UTF-8 bytes + offsets, and their field rows."""
        slots = np.flatnonzero(self._live)
        enc = [self._key_of[s].encode("utf-8") for s in slots.tolist()]
        offsets = np.zeros(len(enc) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in enc], out=offsets[1:])
        arrays = {f"{prefix}.keys": np.frombuffer(b"".join(enc), dtype=np.uint8).copy(),
                  f"{prefix}.key_offsets": offsets}
        for name, a in self.arrays.items():
            arrays[f"{prefix}.{name}"] = a[slots]
        return {"capacity": self.capacity, "size": len(enc), "evicted": self.evicted}, arrays

    def load(self, prefix: str, meta: dict, arrays: dict[str, np.ndarray]) -> None:
        """Fill an empty store from :meth:`state` output (slots 0..n-1)."""
        if len(self):
            raise ValueError("load into an empty store")
        data = np.asarray(arrays[f"{prefix}.keys"], dtype=np.uint8).tobytes()
        off = np.asarray(arrays[f"{prefix}.key_offsets"], dtype=np.int64)
        n = len(off) - 1
        if n > self.capacity:
            raise ValueError(f"checkpoint holds {n} keys, capacity is {self.capacity}")
        keys = [data[off[i]:off[i + 1]].decode("utf-8") for i in range(n)]
        slots, _ = self.lookup(keys)
        for name in self.arrays:
            self.arrays[name][slots] = arrays[f"{prefix}.{name}"]
        self.evicted = int(meta.get("evicted", 0))

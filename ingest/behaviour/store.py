"""A bounded entity store: 64-bit key hash -> slot in fixed-size numpy arrays, least recently seen evicted.

One store holds one entity kind (a source host, a source->destination pair, a destination service),
keyed by the hashes of :mod:`ingest.behaviour.hashing`. Each field is a numpy array of ``capacity`` rows
(plus a trailing shape, e.g. a host's top-k ports); a key owns one row (its *slot*) while it is in the
store. The index is an open-addressing hash table (linear probing, at most half full, tombstones
rebuilt away) in numpy arrays driven by compiled loops: no Python object per key. When new keys do not
fit, the keys seen least recently in event time (smallest ``last_ts``) go first, ties broken by hash,
so the choice never depends on slot numbers (a restored store evicts exactly as the original would).
The store never holds more than ``capacity`` keys: :meth:`lookup` raises instead of growing.

Field arrays are allocated with ``np.empty`` (untouched pages cost no memory) and a slot's row is set to
the field's initial value when the slot is handed out, so memory grows with the keys held, up to
``capacity x bytes_per_slot()`` plus the index (``16 x 2^ceil(log2(2 x capacity))`` bytes).
"""
from __future__ import annotations

import numpy as np

from ingest.jit import jit

__all__ = ["EntityStore"]

EMPTY, TOMB = -1, -2


def _find(tab_key, tab_slot, hashes, out):  # pragma: no cover - numba
    mask = np.uint64(len(tab_key) - 1)
    for i in range(len(hashes)):
        h = hashes[i]
        p = h & mask
        while True:
            s = tab_slot[p]
            if s == -1:
                out[i] = -1
                break
            if s >= 0 and tab_key[p] == h:
                out[i] = s
                break
            p = (p + np.uint64(1)) & mask


def _insert(tab_key, tab_slot, hashes, slots):  # pragma: no cover - numba
    mask = np.uint64(len(tab_key) - 1)
    for i in range(len(hashes)):
        h = hashes[i]
        p = h & mask
        while tab_slot[p] >= 0:
            p = (p + np.uint64(1)) & mask
        tab_key[p] = h
        tab_slot[p] = slots[i]


def _delete(tab_key, tab_slot, hashes):  # pragma: no cover - numba
    mask = np.uint64(len(tab_key) - 1)
    for i in range(len(hashes)):
        h = hashes[i]
        p = h & mask
        while True:
            s = tab_slot[p]
            if s == -1:
                break
            if s >= 0 and tab_key[p] == h:
                tab_slot[p] = -2
                break
            p = (p + np.uint64(1)) & mask


_find_k, _insert_k, _delete_k = jit(_find), jit(_insert), jit(_delete)


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
        size = 1 << int(2 * self.capacity - 1).bit_length()  # a power of two >= 2 x capacity
        self._tab_key = np.zeros(size, dtype=np.uint64)
        self._tab_slot = np.full(size, EMPTY, dtype=np.int64)
        self._tombs = 0
        self._hash_of = np.zeros(self.capacity, dtype=np.uint64)  # slot -> key hash
        self._live = np.zeros(self.capacity, dtype=bool)
        # free slots as a stack; the top is popped first (slot numbers carry no meaning)
        self._free = np.arange(self.capacity - 1, -1, -1, dtype=np.int64)
        self._n_free = self.capacity
        self.evicted = 0  # keys evicted since creation (a counter for monitoring)

    def __len__(self) -> int:
        return self.capacity - self._n_free

    def __contains__(self, key_hash) -> bool:
        out = np.empty(1, dtype=np.int64)
        _find_k(self._tab_key, self._tab_slot, np.array([key_hash], dtype=np.uint64), out)
        return bool(out[0] >= 0)

    def bytes_per_slot(self) -> int:
        """Bytes of field arrays per slot, plus the slot's share of the index and bookkeeping."""
        fields = sum(a.itemsize * int(np.prod(a.shape[1:], dtype=np.int64)) for a in self.arrays.values())
        index = (self._tab_key.nbytes + self._tab_slot.nbytes) / self.capacity
        return int(fields + index + 8 + 1 + 8)  # + hash, live flag, free-stack entry

    def lookup(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(slot per key hash, True where the key was not held and got a fresh slot).

        ``hashes`` (uint64) must be distinct. Keys already held are never evicted by this call (they are in
        use); fresh slots start at each field's initial value. Raises ValueError when more keys are asked
        for than ``capacity`` holds at once.
        """
        hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
        slots = np.empty(len(hashes), dtype=np.int64)
        _find_k(self._tab_key, self._tab_slot, hashes, slots)
        miss = np.flatnonzero(slots < 0)
        m = len(miss)
        fresh = np.zeros(len(hashes), dtype=bool)
        if not m:
            return slots, fresh
        if len(hashes) > self.capacity:
            raise ValueError(f"{len(hashes)} keys at once in a store of capacity {self.capacity}")
        if m > self._n_free:
            self._evict(m - self._n_free, slots[slots >= 0])
        new = self._free[self._n_free - m:self._n_free][::-1].copy()
        self._n_free -= m
        for name, (_, _, init) in self.fields.items():
            self.arrays[name][new] = init
        slots[miss] = new
        fresh[miss] = True
        self._live[new] = True
        self._hash_of[new] = hashes[miss]
        _insert_k(self._tab_key, self._tab_slot, hashes[miss], new)
        return slots, fresh

    def _evict(self, need: int, protect: np.ndarray) -> None:
        """Free ``need`` slots: the least recently seen keys outside ``protect``, ties by hash."""
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
                tie = tie[np.argsort(self._hash_of[tie], kind="stable")[:need - len(below)]]
            victims = np.concatenate([below, tie])
        else:
            victims = cand
        _delete_k(self._tab_key, self._tab_slot, self._hash_of[victims])
        self._tombs += len(victims)
        self._live[victims] = False
        self._free[self._n_free:self._n_free + len(victims)] = victims
        self._n_free += len(victims)
        self.evicted += len(victims)
        if self._tombs > len(self._tab_slot) // 4:
            self._rebuild()

    def _rebuild(self) -> None:
        """Re-insert the held keys into a clean index (drops the tombstones left by evictions)."""
        self._tab_slot[:] = EMPTY
        live = np.flatnonzero(self._live)
        _insert_k(self._tab_key, self._tab_slot, self._hash_of[live], live)
        self._tombs = 0

    # ------------------------------------------------------------------ checkpoint (no pickle)
    def state(self, prefix: str) -> tuple[dict, dict[str, np.ndarray]]:
        """(JSON-able dict, arrays): the held keys' hashes and their field rows."""
        slots = np.flatnonzero(self._live)
        arrays = {f"{prefix}.hash": self._hash_of[slots]}
        for name, a in self.arrays.items():
            arrays[f"{prefix}.{name}"] = a[slots]
        return {"capacity": self.capacity, "size": int(len(slots)), "evicted": self.evicted}, arrays

    def load(self, prefix: str, meta: dict, arrays: dict[str, np.ndarray]) -> None:
        """Fill an empty store from :meth:`state` output."""
        if len(self):
            raise ValueError("load into an empty store")
        hashes = np.asarray(arrays[f"{prefix}.hash"], dtype=np.uint64)
        if len(hashes) > self.capacity:
            raise ValueError(f"checkpoint holds {len(hashes)} keys, capacity is {self.capacity}")
        slots, _ = self.lookup(hashes)
        for name in self.arrays:
            self.arrays[name][slots] = arrays[f"{prefix}.{name}"]
        self.evicted = int(meta.get("evicted", 0))

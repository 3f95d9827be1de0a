"""Which flagged records of a window make one finding: by source, or by destination for many-to-one activity.

A record is keyed by its **destination** when its technique is one whose nature is many sources against
one target (:data:`BY_DESTINATION`: floods, scans, brute force) and at least
:data:`MIN_SOURCES_LISTED` distinct flagged sources reach that destination with it in the window, or,
for any other technique (and for records with no technique), when at least :data:`MIN_SOURCES_OTHER`
do. Every other record is keyed by its **source**. A finding is one ``(key, endpoint, technique)``:
a spoofed SYN flood from a million sources to one server is one finding against the server; a single
scanner sweeping many hosts stays one finding from the scanner.

Vectorised over the window's flagged records (integer codes, no per-record Python loop).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

#: ATT&CK techniques (and their sub-techniques) aggregated by destination, with why
BY_DESTINATION: dict[str, str] = {
    "T1498": "network denial of service (floods): many sources, one target",
    "T1499": "endpoint denial of service: many sources, one service",
    "T1046": "network service discovery: a distributed scan of one host",
    "T1595": "active scanning: many scanners, one exposed host",
    "T1110": "brute force: many sources guessing one account or service",
}
MIN_SOURCES_LISTED = 2
MIN_SOURCES_OTHER = 3


def by_destination(technique: str | None) -> bool:
    """Whether the technique is listed in :data:`BY_DESTINATION` (a sub-technique counts as its parent)."""
    return bool(technique) and str(technique).split(".")[0] in BY_DESTINATION


@dataclass
class Groups:
    """``inverse[i]``: the group of flagged record ``i``; per group its key kind, endpoint and technique."""

    inverse: np.ndarray          # [F] int64
    by: list[str]                # [G] "src" | "dst"
    endpoint: list[str]          # [G]
    technique: list[str]         # [G]
    members: list[np.ndarray]    # [G] indices into the flagged records, ascending
    src_codes: np.ndarray        # [F] int32 code of each record's source (distinct counts, top sources)
    src_names: list              # code -> source
    dst_codes: np.ndarray        # [F]
    dst_names: list
    order: np.ndarray | None = None   # [F] the records group by group (members[0], members[1], ...)
    bounds: np.ndarray | None = None  # [G + 1] group g is order[bounds[g]:bounds[g + 1]]


def _codes(values: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, list]:
    enc = pa.chunked_array([values]) if isinstance(values, pa.Array) else values
    enc = enc.cast(pa.string()).fill_null("None").combine_chunks().dictionary_encode()
    return np.asarray(enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64), enc.dictionary.to_pylist()


def group(src: pa.Array, dst: pa.Array, technique: list[str]) -> Groups:
    """Group the flagged records (``src``, ``dst``, ``technique`` aligned, one entry per record)."""
    s, s_names = _codes(src)
    d, d_names = _codes(dst)
    t, t_names = _codes(pa.array(technique, pa.string()))
    ns, nd = max(len(s_names), 1), max(len(d_names), 1)
    # distinct flagged sources per (technique, destination)
    td = t * nd + d
    tds = np.unique(td * ns + s)
    td_keys, fan_in = np.unique(tds // ns, return_counts=True)
    fan = fan_in[np.searchsorted(td_keys, td)] if len(td) else np.zeros(0, np.int64)
    listed = np.array([by_destination(x) for x in t_names], dtype=bool)
    need = np.where(listed, MIN_SOURCES_LISTED, MIN_SOURCES_OTHER)[t] if len(t) else np.zeros(0, np.int64)
    to_dst = fan >= need
    code = t * (ns + nd) + np.where(to_dst, ns + d, s)
    uniq, first, inverse = np.unique(code, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")            # groups in order of their first record
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    inverse = rank[inverse.reshape(-1)]
    uniq = uniq[order]
    by, endpoint, techs = [], [], []
    for c in uniq.tolist():
        ti, rest = divmod(c, ns + nd)
        techs.append(t_names[ti])
        if rest >= ns:
            by.append("dst")
            endpoint.append(d_names[rest - ns])
        else:
            by.append("src")
            endpoint.append(s_names[rest])
    srt = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[srt], np.arange(len(uniq) + 1))
    members = [srt[bounds[g]:bounds[g + 1]] for g in range(len(uniq))]
    return Groups(inverse, by, endpoint, techs, members, s, s_names, d, d_names, srt, bounds)


def top(codes: np.ndarray, names: list, k: int) -> tuple[int, list[dict]]:
    """``(distinct, [{endpoint, count}] of the k most frequent)`` of one group's codes."""
    vals, counts = np.unique(codes, return_counts=True)
    best = np.lexsort((vals, -counts))[:k]
    return len(vals), [{"endpoint": names[int(vals[i])], "count": int(counts[i])} for i in best]


def distinct_pairs(g: Groups, codes: np.ndarray, n_codes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(group, code, count)`` of each distinct (group, code) pair of the flagged records, sorted by group,
    then code (``codes``: one per record, in ``[0, n_codes)``): every group's ``np.unique(codes[members],
    return_counts=True)`` in one call."""
    n = max(int(n_codes), 1)
    pairs, counts = np.unique(g.inverse * n + np.asarray(codes, dtype=np.int64), return_counts=True)
    return pairs // n, pairs % n, counts


def distinct_counts(g: Groups, codes: np.ndarray, n_codes: int) -> np.ndarray:
    """Distinct ``codes`` per group ``[G]`` (``len(np.unique(codes[members]))`` of each)."""
    return np.bincount(distinct_pairs(g, codes, n_codes)[0], minlength=len(g.members))


def top_all(g: Groups, codes: np.ndarray, names: list, k: int) -> tuple[np.ndarray, list[list[dict]]]:
    """:func:`top` of every group at once: ``(distinct [G], per group [{endpoint, count}] of its k most
    frequent)``, the same counts and order (count descending, then code)."""
    G = len(g.members)
    pg, pc, counts = distinct_pairs(g, codes, len(names))
    distinct = np.bincount(pg, minlength=G)
    order = np.lexsort((pc, -counts, pg))
    start = np.zeros(G + 1, dtype=np.int64)
    np.cumsum(distinct, out=start[1:])
    codes_l, counts_l = pc[order].tolist(), counts[order].tolist()
    tops = [[{"endpoint": names[codes_l[i]], "count": counts_l[i]} for i in range(a, min(a + k, b))]
            for a, b in zip(start[:-1].tolist(), start[1:].tolist())]
    return distinct, tops

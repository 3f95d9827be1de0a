"""Compaction: merge the small files of an archive's closed hours into one file per hour, atomically.

A daemon flushes its archive before every offset commit, so a busy hour holds hundreds of small files
(``docs/archive.md``, "Compaction"). :func:`compact` rewrites each **closed** hour -- its end at least
``grace`` seconds behind the wall clock, and not the newest hour of the archive -- that holds more than one
file: the files' records are read, sorted by ``ts`` and written to one new file (several when the hour holds
more than ``max_rows`` records), named after the earliest of them so that reading order is kept. The rows of
the new file are counted against the old files' before anything is published; the old files are removed only
after the new one is in place.

Crash safety uses the archive's journal (``ROOT/_journal/compact-*.json``, written and fsynced before the
rename): ``{"renames": [[tmp, final]], "deletes": [old files]}``. :func:`finish_compactions` (run by the next
:func:`compact` and by every :class:`ingest.archive.ArchiveWriter` when it opens) rolls a journal forward: the
renames are finished, then the old files deleted. While a journal is pending, :func:`ingest.archive.read_archive`
reads the new file and not the old ones whose replacement exists, so a reader sees every record once.

A writer may append to a closed hour at any time (late records): compaction only ever touches the files it
listed, so such a file stays and is merged by a later run.
"""
from __future__ import annotations

import json
import logging
import os
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ingest.archive_layout import META_KEY, check_file, fsync_dir, part_dirs, part_start

log = logging.getLogger(__name__)

JOURNAL_GLOB = "compact-*.json"


def _journals(root: Path) -> list[Path]:
    d = root / "_journal"
    return sorted(d.glob(JOURNAL_GLOB)) if d.is_dir() else []


def replaced_files(root: Path) -> set[str]:
    """Files a pending compaction has replaced (its new file is in place) but not yet deleted: not to be read."""
    out: set[str] = set()
    for j in _journals(root):
        try:
            data = json.loads(j.read_text())
            if all((root / final).exists() for _tmp, final in data["renames"]):
                out.update(os.path.normpath(str(root / f)) for f in data["deletes"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def finish_compactions(root: str | os.PathLike) -> int:
    """Roll every pending compaction journal of ``root`` forward; returns how many were finished."""
    root = Path(root)
    n = 0
    for j in _journals(root):
        try:
            data = json.loads(j.read_text())
            renames, deletes = data["renames"], data["deletes"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("archive compaction journal %s unreadable (%s); ignored", j, exc)
            continue
        done = True
        for tmp, final in renames:
            if (root / tmp).exists():
                os.replace(root / tmp, root / final)
                fsync_dir((root / final).parent)
            elif not (root / final).exists():
                done = False   # neither: the hour was deleted by retention meanwhile; keep what is there
        if done:
            for f in deletes:
                (root / f).unlink(missing_ok=True)
            for d in {(root / f).parent for f in deletes}:
                fsync_dir(d) if d.is_dir() else None
        j.unlink()
        fsync_dir(j.parent)
        n += 1
    return n


def _merged_meta(metas: list[dict], rows: int) -> dict:
    kind = next((m.get("kind") for m in metas if m.get("kind")), None)
    ranges: dict[tuple[str, int], list[int]] = {}
    for m in metas:
        for t, p, lo, hi in m.get("positions", []):
            r = ranges.setdefault((t, int(p)), [int(lo), int(hi)])
            r[0], r[1] = min(r[0], int(lo)), max(r[1], int(hi))
    return {"kind": kind, "rows": rows, "positions": [[t, p, lo, hi] for (t, p), (lo, hi) in sorted(ranges.items())],
            "compacted_from": len(metas)}


def _groups(files: list[tuple[Path, dict, int]], max_rows: int) -> list[list[tuple[Path, dict, int]]]:
    """Consecutive runs of files holding at most ``max_rows`` rows each (a larger single file stays alone)."""
    out, cur, n = [], [], 0
    for f in files:
        if cur and n + f[2] > max_rows:
            out.append(cur)
            cur, n = [], 0
        cur.append(f)
        n += f[2]
    if cur:
        out.append(cur)
    return out


def _compact_group(root: Path, group: list[tuple[Path, dict, int]]) -> tuple[Path, int]:
    """Merge ``group`` (files of one hour) into one new file, published atomically; returns it and its rows."""
    d = group[0][0].parent
    tables = [pq.read_table(f) for f, _m, _n in group]
    schema = tables[0].schema.remove_metadata()
    table = pa.concat_tables([t.replace_schema_metadata(None).cast(schema) for t in tables])
    table = table.take(pc.sort_indices(table, [("ts", "ascending")]))
    expected = sum(n for _f, _m, n in group)
    if table.num_rows != expected:
        raise RuntimeError(f"compaction of {d}: read {table.num_rows} rows, the files' footers say {expected}")
    meta = _merged_meta([m for _f, m, _n in group], table.num_rows)
    stamp = group[0][0].name.split("-")[1]                      # the earliest file's write time keeps the order
    name = f"part-{stamp}-c{uuid.uuid4().hex[:8]}.parquet"
    final, tmp = d / name, d / f".{name}.tmp"
    with open(tmp, "wb") as fh:
        pq.write_table(table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()}), fh, compression="zstd")
        fh.flush()
        os.fsync(fh.fileno())
    if pq.read_metadata(tmp).num_rows != expected:
        tmp.unlink()
        raise RuntimeError(f"compaction of {d}: the new file does not hold the {expected} rows written")
    jdir = root / "_journal"
    jdir.mkdir(exist_ok=True)
    j = jdir / f"compact-{time.time_ns():020d}-{uuid.uuid4().hex[:6]}.json"
    jtmp = j.with_suffix(".json.tmp")
    with open(jtmp, "w") as fh:
        json.dump({"renames": [[str(tmp.relative_to(root)), str(final.relative_to(root))]],
                   "deletes": [str(f.relative_to(root)) for f, _m, _n in group]}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(jtmp, j)
    fsync_dir(jdir)
    # from here on the compaction happens: finish_compactions rolls it forward after a crash
    os.replace(tmp, final)
    fsync_dir(d)
    for f, _m, _n in group:
        f.unlink(missing_ok=True)
    fsync_dir(d)
    j.unlink()
    fsync_dir(jdir)
    return final, table.num_rows


def compact(root: str | os.PathLike, *, grace: float = 3600.0, max_rows: int = 5_000_000, now: float | None = None,
            dry_run: bool = False) -> dict:
    """Compact every closed hour of the archive at ``root`` that holds more than one file.

    Args:
        root: the archive directory.
        grace: seconds after an hour's end before it counts as closed (default one hour).
        max_rows: the most records one new file holds (an hour with more gets several, each sorted).
        now: the wall clock in epoch seconds (tests).
        dry_run: only report what would be merged.

    Returns a summary: hours compacted, files and records before and after, hours left open.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"archive not found: {root} (give the directory the archive writes to)")
    if grace < 0 or max_rows < 1:
        raise ValueError(f"grace={grace!r} must be >= 0 and max_rows={max_rows!r} >= 1")
    finished = 0 if dry_run else finish_compactions(root)
    now = time.time() if now is None else now
    parts = part_dirs(root)
    newest = parts[-1][0] if parts else None
    out = {"archive": str(root), "hours": 0, "hours_open": 0, "files_before": 0, "files_after": 0, "records": 0,
           "bad_files": [], "journals_finished": finished, "dry_run": dry_run}
    for part, d in parts:
        if part == newest or part_start(part) + 3600 + grace > now:
            out["hours_open"] += 1
            continue
        files = []
        for f in sorted(d.glob("*.parquet")):
            if f.name.startswith("."):
                continue
            meta, why = check_file(f)
            if meta is None:
                out["bad_files"].append([str(f), why])
                continue
            files.append((f, meta, pq.read_metadata(f).num_rows))
        if len(files) < 2:
            continue
        groups = [g for g in _groups(files, max_rows) if len(g) > 1]
        if not groups:
            continue
        out["hours"] += 1
        for g in groups:
            out["files_before"] += len(g)
            out["records"] += sum(n for _f, _m, n in g)
            if not dry_run:
                _compact_group(root, g)
            out["files_after"] += 1
        log.info("archive %s: compacted %s hour %02d", root, part[0], part[1])
    return out


__all__ = ["compact", "finish_compactions", "replaced_files"]

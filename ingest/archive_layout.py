"""The archive's layout on disk, shared by its writer, reader and compactor.

``ROOT/date=YYYY-MM-DD/hour=HH/part-<write time ns>-<random>.parquet`` (zstd), one schema per archive
(:func:`archive_schema`), archive metadata under :data:`META_KEY` in each file's footer, and the journals
of unfinished flushes and compactions in ``ROOT/_journal/`` (docs/archive.md).
"""
from __future__ import annotations

import json
import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from ingest.schema import FLOW_SCHEMA, TX_SCHEMA
from ingest.windows import parse_duration

#: Columns the archive adds to the canonical record.
EXTRA_FIELDS = (
    pa.field("score", pa.float64()),            # the model's score; null when not scored
    pa.field("alert", pa.bool_()),              # the record was flagged; null when not scored
    pa.field("alert_id", pa.string()),          # OCSF finding_info.uid of the alert it went into, if any
    pa.field("model_version", pa.string()),     # the model that scored it; null when not scored
    pa.field("kafka_topic", pa.string()),       # source position: topic (or "file:<path>")
    pa.field("kafka_partition", pa.int32()),
    pa.field("kafka_offset", pa.int64()),       # message offset (or the record's row in its file)
    pa.field("kafka_index", pa.int32()),        # record's index inside its message (0: one per message)
)
POSITION_COLUMNS = ("kafka_topic", "kafka_partition", "kafka_offset", "kafka_index")
META_KEY = b"graphsentry.archive"
PARTITIONING = ds.partitioning(pa.schema([("date", pa.string()), ("hour", pa.int32())]), flavor="hive")
HOUR_US = 3_600_000_000


def archive_schema(kind: str = "flows") -> pa.Schema:
    """The schema of archive files of ``kind`` (``"flows"`` or ``"transactions"``)."""
    base = TX_SCHEMA if kind == "transactions" else FLOW_SCHEMA
    return pa.schema(list(base) + list(EXTRA_FIELDS))


def parse_time(value: Any, now: float | None = None) -> datetime | None:
    """A UTC datetime from ``None``, a datetime, epoch seconds, an ISO-8601 string, or a duration
    before ``now`` (``"7d"``, ``"12h"``: read with :func:`ingest.windows.parse_duration`)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), timezone.utc)
    text = str(value).strip()
    try:
        secs = parse_duration(text)
    except ValueError:
        pass
    else:
        if text[-1:].isalpha():  # "7d" is a duration; a bare number is epoch seconds
            base = time.time() if now is None else now
            return datetime.fromtimestamp(base - secs, timezone.utc)
        return datetime.fromtimestamp(secs, timezone.utc)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"invalid time {value!r}: use a duration back from now (7d, 12h, 30m), "
                         "an ISO-8601 time (2026-12-04T07:00:00Z) or epoch seconds") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def part_of(dirpath: Path) -> tuple[str, int] | None:
    """(date, hour) of a ``date=…/hour=…`` directory, or None."""
    try:
        d, h = dirpath.parent.name, dirpath.name
        if not (d.startswith("date=") and h.startswith("hour=")):
            return None
        date = d[5:]
        datetime.strptime(date, "%Y-%m-%d")
        hour = int(h[5:])
        return (date, hour) if 0 <= hour < 24 else None
    except ValueError:
        return None


def part_start(part: tuple[str, int]) -> float:
    d = datetime.strptime(part[0], "%Y-%m-%d").replace(tzinfo=timezone.utc)
    return d.timestamp() + 3600 * part[1]


def part_dirs(root: Path) -> list[tuple[tuple[str, int], Path]]:
    out = []
    if not root.is_dir():
        return out
    for dd in root.iterdir():
        if not dd.is_dir() or not dd.name.startswith("date="):
            continue
        for hd in dd.iterdir():
            part = part_of(hd) if hd.is_dir() else None
            if part is not None:
                out.append((part, hd))
    return sorted(out)


def check_file(path: Path) -> tuple[dict | None, str | None]:
    """(archive metadata, None) for a readable archive file; (None, reason) otherwise."""
    try:
        if path.stat().st_size == 0:
            return None, "empty file"
        md = pq.read_metadata(path)
    except (OSError, pa.ArrowException) as exc:
        return None, f"not a Parquet file ({type(exc).__name__}: {str(exc)[:120]})"
    if "ts" not in md.schema.names:
        return None, "no ts column: not an archive file"
    kv = md.metadata or {}
    try:
        meta = json.loads(kv[META_KEY]) if META_KEY in kv else {}
    except ValueError:
        meta = {}
    return meta, None


def fsync_dir(d: Path) -> None:
    """fsync a directory (a rename in it is then durable); a no-op where the filesystem refuses."""
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
          "ki": 1024, "kib": 1024, "mi": 1024 ** 2, "mib": 1024 ** 2, "gi": 1024 ** 3, "gib": 1024 ** 3,
          "ti": 1024 ** 4, "tib": 1024 ** 4}


def parse_size(text: str) -> int:
    """Bytes from ``"500MB"``, ``"20GiB"``, ``"1.5G"`` or a bare number of bytes."""
    m = _SIZE.match(str(text))
    unit = (m.group(2) or "").lower() if m else None
    if not m or unit not in _UNITS or float(m.group(1)) <= 0:
        raise ValueError(f"invalid size {text!r}: use a positive number with an optional unit "
                         "(B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), e.g. 20GB")
    return int(float(m.group(1)) * _UNITS[unit])

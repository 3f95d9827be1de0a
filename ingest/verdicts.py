"""Triage verdicts: the analysts' labels on alerts, as retraining reads them.

A verdict file is CSV with two columns, ``alert id`` and ``verdict`` (a header row is optional; more
columns are ignored)::

    alert_id,verdict
    3f1c0a9e5b2d4c6e8a0b1c2d,malicious
    9a8b7c6d5e4f3a2b1c0d9e8f,false_positive

The alert id is the OCSF Detection Finding's ``finding_info.uid`` (also ``metadata.uid``): the first
24 hex digits of ``sha1("<window start>|<source>|<technique>")`` (``detector.alerts.ocsf.alert_id``).
The archive stores it per record in ``alert_id`` (the alert the record was folded into; null for
records that raised none), and :func:`apply_verdicts` joins on it.

Accepted verdicts (case-insensitive; ``-`` and spaces read as ``_``), each folded into one of three labels:

* ``malicious``: a confirmed attack. Also ``true_positive``, ``tp``, ``confirmed``, ``attack``.
  Retraining removes these records from the benign training set.
* ``benign``: a cleared alert. Also ``false_positive``, ``fp``, ``cleared``, ``benign_true_positive``.
  Retraining may add these records to the benign training set.
* ``undetermined``: looked at, no decision. Also ``unknown``, ``needs_review``, ``inconclusive``.
  Not a label: retraining treats it like no verdict (the record keeps its alert flag).

A line that is not ``alert id, verdict`` with a known verdict is counted by reason in
``Verdicts.bad_lines`` (with its line number), never raised. When one alert id appears twice, the
later line wins (counted in ``Verdicts.overridden``).
"""
from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

log = logging.getLogger(__name__)

MALICIOUS, BENIGN, UNDETERMINED = "malicious", "benign", "undetermined"
VERDICTS = (MALICIOUS, BENIGN, UNDETERMINED)
ALIASES: dict[str, str] = {
    **{k: MALICIOUS for k in ("malicious", "true_positive", "tp", "confirmed", "attack")},
    **{k: BENIGN for k in ("benign", "false_positive", "fp", "cleared", "benign_true_positive")},
    **{k: UNDETERMINED for k in ("undetermined", "unknown", "needs_review", "inconclusive")},
}
_HEADER_IDS = {"alert_id", "alert id", "alertid", "id", "finding_uid", "uid"}
_ID = re.compile(r"^[0-9A-Za-z_.:-]{1,128}$")


def normalise_verdict(text: str) -> str | None:
    """The label (``malicious``/``benign``/``undetermined``) of a verdict as written, or None."""
    return ALIASES.get(re.sub(r"[\s-]+", "_", str(text).strip().lower()))


@dataclass
class Verdicts:
    """Alert id -> label, with what could not be read."""

    by_alert: dict[str, str] = field(default_factory=dict)
    bad_lines: list[tuple[int, str]] = field(default_factory=list)   # (line number, reason)
    overridden: int = 0

    def __len__(self) -> int:
        return len(self.by_alert)

    def counts(self) -> dict[str, int]:
        out = {v: 0 for v in VERDICTS}
        for v in self.by_alert.values():
            out[v] += 1
        return out

    def bad_reasons(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for _line, why in self.bad_lines:
            out[why] = out.get(why, 0) + 1
        return out

    def summary(self) -> str:
        c = self.counts()
        text = f"{len(self)} verdicts ({c[MALICIOUS]} malicious, {c[BENIGN]} benign, {c[UNDETERMINED]} undetermined)"
        if self.bad_lines:
            text += f"; {len(self.bad_lines)} bad lines {self.bad_reasons()} (first: line {self.bad_lines[0][0]})"
        return text


def read_verdicts(csv_path: str | os.PathLike) -> Verdicts:
    """Read a verdict CSV (``alert id, verdict``). Bad lines are counted, never raised.

    Raises ``FileNotFoundError``/``IsADirectoryError`` only when the file itself cannot be opened.
    """
    out = Verdicts()
    with open(csv_path, newline="", encoding="utf-8", errors="replace") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            cells = [c.strip() for c in row]
            if not cells or all(c == "" for c in cells) or cells[0].startswith("#"):
                continue
            if lineno == 1 and cells[0].lower() in _HEADER_IDS:
                continue  # the header row
            if len(cells) < 2:
                out.bad_lines.append((lineno, "missing_verdict"))
                continue
            aid, raw = cells[0], cells[1]
            if "\x00" in aid or not _ID.match(aid):
                out.bad_lines.append((lineno, "bad_alert_id"))
                continue
            label = normalise_verdict(raw)
            if label is None:
                out.bad_lines.append((lineno, "unknown_verdict"))
                continue
            if aid in out.by_alert:
                out.overridden += 1
            out.by_alert[aid] = label
    if out.bad_lines:
        log.warning("%s: %d lines skipped %s (first: line %d); accepted verdicts: %s", csv_path,
                    len(out.bad_lines), out.bad_reasons(), out.bad_lines[0][0], ", ".join(sorted(ALIASES)))
    return out


def apply_verdicts(batches: Iterable[pa.RecordBatch], verdicts: Verdicts | dict[str, str]) -> Iterator[pa.RecordBatch]:
    """Each batch with a ``verdict`` column (string): the label of the record's ``alert_id``, else null.

    A batch without an ``alert_id`` column gets an all-null ``verdict``; an existing ``verdict``
    column is replaced.
    """
    table = verdicts.by_alert if isinstance(verdicts, Verdicts) else dict(verdicts)
    ids = pa.array(list(table.keys()), pa.string())
    labels = np.array(list(table.values()), dtype=object)
    for b in batches:
        if "alert_id" in b.schema.names and len(ids):
            pos = pc.index_in(b.column("alert_id"), value_set=ids).to_numpy(zero_copy_only=False)
            ok = ~np.isnan(pos.astype(float))
            vals = np.full(b.num_rows, None, dtype=object)
            vals[ok] = labels[pos[ok].astype(np.int64)]
            col = pa.array(vals, pa.string())
        else:
            col = pa.nulls(b.num_rows, pa.string())
        if "verdict" in b.schema.names:
            i = b.schema.get_field_index("verdict")
            b = pa.RecordBatch.from_arrays([c for j, c in enumerate(b.columns) if j != i],
                                           names=[n for j, n in enumerate(b.schema.names) if j != i])
        yield pa.RecordBatch.from_arrays(list(b.columns) + [col], names=list(b.schema.names) + ["verdict"])

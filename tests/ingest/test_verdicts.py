"""Triage verdicts from CSV: accepted values, bad lines counted, joined onto archived records by alert id."""
from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pytest

from ingest.archive import ArchiveWriter, read_archive
from ingest.schema import FLOW_SCHEMA, conform
from ingest.verdicts import BENIGN, MALICIOUS, UNDETERMINED, Verdicts, apply_verdicts, normalise_verdict, read_verdicts

A, B, C = "3f1c0a9e5b2d4c6e8a0b1c2d", "9a8b7c6d5e4f3a2b1c0d9e8f", "0123456789abcdef01234567"


@pytest.mark.parametrize("text, label", [
    ("malicious", MALICIOUS), ("True_Positive", MALICIOUS), ("true-positive", MALICIOUS), ("TP", MALICIOUS),
    ("confirmed", MALICIOUS), ("benign", BENIGN), ("false positive", BENIGN), ("fp", BENIGN), ("cleared", BENIGN),
    ("unknown", UNDETERMINED), ("needs review", UNDETERMINED), ("maybe", None), ("", None),
])
def test_accepted_verdicts(text, label):
    assert normalise_verdict(text) == label


def test_read_with_header_and_aliases(tmp_path):
    f = tmp_path / "v.csv"
    f.write_text(f"alert id, verdict\n{A},true_positive\n{B}, false_positive \n\n# a comment\n{C},unknown\n")
    v = read_verdicts(f)
    assert v.by_alert == {A: MALICIOUS, B: BENIGN, C: UNDETERMINED}
    assert v.bad_lines == [] and v.counts() == {MALICIOUS: 1, BENIGN: 1, UNDETERMINED: 1}


def test_bad_lines_are_counted_not_raised(tmp_path):
    f = tmp_path / "v.csv"
    f.write_text(f"{A},malicious\n{B}\nnot an id!,benign\n{C},perhaps\n{A},benign\n")
    v = read_verdicts(f)
    assert v.by_alert == {A: BENIGN}  # the later line wins
    assert v.overridden == 1
    assert v.bad_lines == [(2, "missing_verdict"), (3, "bad_alert_id"), (4, "unknown_verdict")]
    assert "3 bad lines" in v.summary()


def test_binary_garbage_does_not_crash(tmp_path):
    f = tmp_path / "v.csv"
    f.write_bytes(os.urandom(4000) + b"\n" + f"{A},malicious\n".encode())
    v = read_verdicts(f)
    assert v.by_alert.get(A) == MALICIOUS


def test_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_verdicts(tmp_path / "missing.csv")


def test_apply_verdicts_to_the_archive(tmp_path):
    n = 6
    t = conform(pa.table({
        "row": pa.array(np.arange(n, dtype=np.int64)),
        "ts": pa.array((1_764_000_000 + np.arange(n)) * 1_000_000, pa.timestamp("us", tz="UTC")),
        "src_ip": ["10.0.0.1"] * n, "dst_ip": ["10.0.0.2"] * n}), FLOW_SCHEMA)
    with ArchiveWriter(tmp_path / "a") as w:
        w.write(t, scores=np.arange(n) / n, alerts=[True, True, False, True, False, False], model_version="v1",
                alert_ids=[A, A, None, B, None, None])
    v = Verdicts(by_alert={A: MALICIOUS, C: BENIGN})
    out = pa.Table.from_batches(list(apply_verdicts(read_archive(tmp_path / "a"), v)))
    assert out.column("verdict").to_pylist() == [MALICIOUS, MALICIOUS, None, None, None, None]
    assert out.schema.field("verdict").type == pa.string()
    again = pa.Table.from_batches(list(apply_verdicts(out.to_batches(), {B: BENIGN})))
    assert again.column_names.count("verdict") == 1
    assert again.column("verdict").to_pylist() == [None, None, None, BENIGN, None, None]


def test_batches_without_alert_ids_get_null_verdicts():
    b = pa.record_batch({"x": [1, 2]})
    (out,) = apply_verdicts([b], {A: MALICIOUS})
    assert out.column("verdict").null_count == 2

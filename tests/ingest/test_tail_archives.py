"""TailSource and Arrow/Parquet archives dropped into a followed directory: read once, whole, after
their size held for one poll; an unreadable one is dead-lettered, not raised."""
import io

import pyarrow as pa
import pyarrow.parquet as pq

from ingest.deadletter import DeadLetter
from ingest.schema import FLOW_SCHEMA
from ingest.tail import TailSource


def _parquet_bytes(n: int = 5) -> bytes:
    t = pa.table({"row": pa.array(range(n), pa.int64()),
                  "ts": pa.array([1_600_000_000_000_000 + i for i in range(n)], pa.timestamp("us", tz="UTC")),
                  "src_ip": ["10.0.0.1"] * n, "dst_ip": ["10.0.0.2"] * n})
    t = pa.table({f.name: (t.column(f.name).cast(f.type) if f.name in t.column_names else pa.nulls(n, f.type))
                  for f in FLOW_SCHEMA}, schema=FLOW_SCHEMA)
    buf = io.BytesIO()
    pq.write_table(t, buf)
    return buf.getvalue()


def _rows(src: TailSource) -> int:
    return sum(t.num_rows for t in src._scan_once())


def test_a_parquet_file_still_being_written_is_read_once_complete(tmp_path):
    data = _parquet_bytes()
    p = tmp_path / "flows.parquet"
    p.write_bytes(data[: len(data) // 2])  # a copy in progress
    src = TailSource([tmp_path], follow=True)
    assert _rows(src) == 0  # new: look again next poll
    with open(p, "ab") as f:
        f.write(data[len(data) // 2:])
    assert _rows(src) == 0  # grew since the last poll: still being written
    assert _rows(src) == 5  # size held for one poll: read whole
    assert _rows(src) == 0  # read once


def test_an_unreadable_parquet_file_is_dead_lettered_not_raised(tmp_path):
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    good = tmp_path / "good.parquet"
    good.write_bytes(_parquet_bytes(3))
    dl = DeadLetter(None)
    src = TailSource([tmp_path], follow=True, dead_letter=dl)
    assert _rows(src) == 0
    assert _rows(src) == 3  # the broken file does not stop the good one
    assert dl.counts.get("unreadable_file") == 1
    assert _rows(src) == 0

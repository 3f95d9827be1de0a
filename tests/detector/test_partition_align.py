"""Event-time alignment of Kafka partitions: :meth:`PartitionMerger.ahead` names the partitions read ahead of the
slowest one once the merge buffer is half full, so the source pauses them before a forced release makes records
late."""
from __future__ import annotations

import pyarrow as pa

from detector.daemon.ledger import PartitionMerger
from ingest.schema import FLOW_SCHEMA


def flows(ts_seconds: list[float]) -> pa.Table:
    n = len(ts_seconds)
    cols = {f.name: [None] * n for f in FLOW_SCHEMA}
    cols.update(row=list(range(n)), ts=[int(x * 1e6) for x in ts_seconds], src_ip=["10.0.0.1"] * n,
                dst_ip=["10.0.0.2"] * n, proto=["tcp"] * n)
    return pa.Table.from_pydict(cols, schema=FLOW_SCHEMA)


def test_nothing_is_held_while_the_buffer_is_small():
    m = PartitionMerger(max_rows=100)
    m.add(0, flows([float(i) for i in range(40)]))   # partition 0 is 40 s ahead of partition 1
    m.add(1, flows([0.0]))
    assert m.ahead() == set()


def test_the_partitions_ahead_of_the_slowest_are_named_once_the_buffer_is_half_full():
    m = PartitionMerger(max_rows=100, assigned=lambda: {0, 1, 2})
    m.add(0, flows([float(i) for i in range(60)]))
    m.add(2, flows([float(i) / 2 for i in range(60)]))
    assert m.ahead() == {0, 2}                        # partition 1 not heard from: hold the others
    m.add(1, flows([5.0]))
    assert m.ahead() == {0, 2}                        # both are past partition 1's 5 s
    out = m.release()                                  # what is not newer than the slowest partition goes on
    assert out is not None and out.num_rows < 121
    m.add(1, flows([100.0]))                           # partition 1 overtook them all
    m.release()
    assert m.ahead() == set()                          # released: the buffer is small again

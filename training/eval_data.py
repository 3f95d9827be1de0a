"""The shared data sets the evaluation suites read (``../shared/data/flows``), and how they read them: one
canonical table per list of captures, its ``row`` numbers renumbered after a selection."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "flows"


def read(paths) -> pa.Table:
    """All records of ``paths`` as one canonical table."""
    from ingest.readers import open_inputs

    return pa.Table.from_batches(list(open_inputs([str(p) for p in paths])))


def renumber(t: pa.Table) -> pa.Table:
    """``t`` with ``row`` = 0, 1, 2, ... (after a filter or concatenation)."""
    return t.set_column(t.schema.get_field_index("row"), "row", pa.array(np.arange(t.num_rows), pa.int64()))

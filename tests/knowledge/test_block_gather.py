"""Gathering shared knowledge rows into an ``out`` array: straight into a contiguous one, a block of rows at a
time into a view of a wider one (the model inputs' last columns); both equal ``rows[idx]``."""
import numpy as np
import pytest

from knowledge.features import block


@pytest.mark.parametrize("step", [1, 7, 2048])
def test_gather_into_contiguous_and_strided_out(step, monkeypatch):
    monkeypatch.setattr(block, "_GATHER_ROWS", step)
    rng = np.random.default_rng(step)
    rows = rng.random((50, 6)).astype(np.float32)
    idx = rng.integers(0, 50, 103)
    wide = np.full((103, 9), -1.0, dtype=np.float32)
    assert block._gather(rows, idx, wide[:, 3:]) is not None
    assert np.array_equal(wide[:, 3:], rows[idx]) and (wide[:, :3] == -1.0).all()  # the other columns untouched
    flat = np.empty((103, 6), dtype=np.float32)
    assert np.array_equal(block._gather(rows, idx, flat), rows[idx])
    assert np.array_equal(block._gather(rows, idx[:0], np.empty((0, 9), np.float32)[:, 3:]), rows[:0])
    with pytest.raises(ValueError, match="shape"):
        block._gather(rows, idx, np.empty((103, 5), np.float32))

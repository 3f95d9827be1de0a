"""Label latency: terminal fraud risk at t may use only labels known by t (ts + delay <= t)."""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pyarrow as pa

from ingest.fraud.graph import EDGE_FEATURES, HeteroGraphBuilder
from ingest.schema import TX_SCHEMA, conform

D = 86400.0
T0 = datetime(2018, 4, 2, tzinfo=timezone.utc).timestamp()


def tx(rows: list[tuple], row0: int = 0) -> pa.Table:
    """rows: (seconds after T0, customer, terminal, amount, label)."""
    return conform(pa.table({
        "row": pa.array(np.arange(row0, row0 + len(rows)), pa.int64()),
        "ts": pa.array([int((T0 + r[0]) * 1e6) for r in rows], pa.timestamp("us", tz="UTC")),
        "customer_id": [r[1] for r in rows], "terminal_id": [r[2] for r in rows],
        "amount": [float(r[3]) for r in rows], "label": pa.array([r[4] for r in rows], pa.int8()),
    }), TX_SCHEMA)

RISK = [EDGE_FEATURES.index(f"term_risk_{w}") for w in (1, 7, 30)]


def _random_stream(seed: int, n: int = 600, days: int = 40):
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.uniform(0, days * D, n))
    return [(float(s), f"c{rng.integers(20)}", f"t{rng.integers(6)}", float(rng.uniform(1, 200)),
             int(rng.random() < 0.3)) for s in ts]


def _features(rows, builder_cls=HeteroGraphBuilder):
    b = builder_cls()
    out = []
    # day-sized windows, as a stream
    day = np.array([r[0] // D for r in rows])
    off = 0
    for d in np.unique(day):
        part = [r for r, dd in zip(rows, day) if dd == d]
        out.append(b.transform(tx(part, row0=off)).edge)
        off += len(part)
    return np.concatenate(out)


def _leaks(rows, builder_cls=HeteroGraphBuilder, delay=7 * D) -> bool:
    """True if rewriting labels not yet known at some cut changes a feature before that cut."""
    ts = np.array([r[0] for r in rows])
    base = _features(rows, builder_cls)
    rng = np.random.default_rng(0)
    for cut in (12.5 * D, 20.3 * D, 31.9 * D):
        future = ts + delay > cut          # labels not known at `cut`
        flipped = [(r[0], r[1], r[2], r[3], int(rng.random() < 0.5) if f else r[4]) for r, f in zip(rows, future)]
        other = _features(flipped, builder_cls)
        before = ts <= cut
        if not np.array_equal(base[before], other[before]):
            return True
    return False


def test_no_future_label_reaches_features():
    rows = _random_stream(3)
    assert not _leaks(rows)


def test_the_leak_check_catches_a_leaky_builder():
    """The same check fails for a builder that releases labels without waiting."""

    class Leaky(HeteroGraphBuilder):
        def _release_labels(self, t0: float) -> None:
            super()._release_labels(float("inf"))

        def _term_hist(self, node, day):  # and reads yesterday's bins instead of delayed ones
            n = np.cumsum(self.term.gather(node, day, 1, 30, "n"), axis=1)
            f = np.cumsum(self.term.gather(node, day, 1, 30, "fraud"), axis=1)
            return n, f

    assert _leaks(_random_stream(3), builder_cls=Leaky)


def test_terminal_risk_appears_exactly_when_label_is_known():
    # Fraud at terminal X on day 0, 23:00. With a 7-day delay its label is known on day 7, 23:00;
    # the day-binned rule uses it from day 8 00:00 on (conservative), never before it is known.
    rows = [(23 * 3600, "A", "X", 10, 1)]
    probes = {6.99: 0.0, 7.5: 0.0, 8.01: 1.0}
    for when, expect in probes.items():
        b = HeteroGraphBuilder(label_delay_s=7 * D)
        b.transform(tx(rows))
        f = b.transform(tx([(when * D, "B", "X", 10, 0)], row0=1))
        assert f.edge[0, RISK[2]] == expect, when
        assert f.handbook[0, 14] == expect   # TERMINAL_ID_RISK_30DAY_WINDOW


def test_labels_unused_when_disabled():
    b = HeteroGraphBuilder(use_labels=False)
    b.transform(tx([(3600, "A", "X", 10, 1)]))
    f = b.transform(tx([(9 * D, "B", "X", 10, 0)], row0=1))
    assert f.edge[0, RISK[2]] == 0.0

"""HeteroGraphBuilder on a hand-made transaction stream: nodes, edges, features checked exactly."""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pytest

from ingest.fraud.graph import EDGE_FEATURES, HANDBOOK_FEATURES, HeteroGraphBuilder
from ingest.schema import TX_SCHEMA, conform

D = 86400.0
T0 = datetime(2018, 4, 2, tzinfo=timezone.utc).timestamp()  # a Monday, 00:00 UTC


def tx(rows: list[tuple], row0: int = 0) -> pa.Table:
    """rows: (seconds after T0, customer, terminal, amount, label)."""
    return conform(pa.table({
        "row": pa.array(np.arange(row0, row0 + len(rows)), pa.int64()),
        "tx_id": [f"t{row0 + i}" for i in range(len(rows))],
        "ts": pa.array([int((T0 + r[0]) * 1e6) for r in rows], pa.timestamp("us", tz="UTC")),
        "customer_id": [r[1] for r in rows], "terminal_id": [r[2] for r in rows],
        "amount": [float(r[3]) for r in rows], "label": pa.array([r[4] for r in rows], pa.int8()),
    }), TX_SCHEMA)


class W:
    def __init__(self, start: float, end: float, table: pa.Table) -> None:
        self.start, self.end, self.table = start, end, table


def col(g, name: str) -> np.ndarray:
    return g["customer", "pays", "terminal"].edge_attr[:, EDGE_FEATURES.index(name)].numpy()


def test_known_window_nodes_edges_and_rows():
    b = HeteroGraphBuilder()
    # 8h window: A pays X twice, B pays X, A pays Y; row order == time order here.
    w1 = tx([(3600, "A", "X", 10, 0), (7200, "B", "X", 20, 0), (10800, "A", "Y", 30, 0), (14400, "A", "X", 50, 0)])
    g = b.build(W(T0, T0 + 8 * 3600, w1))
    assert g["customer"].node_key == ["A", "B"]
    assert g["terminal"].node_key == ["X", "Y"]
    assert g["customer"].node_gid.tolist() == [0, 1]
    assert g["terminal"].node_gid.tolist() == [0, 1]
    st = g["customer", "pays", "terminal"]
    # edge i is row i: (customer A=0, terminal X=0), (B=1, X=0), (A=0, Y=1), (A=0, X=0)
    assert st.edge_index.tolist() == [[0, 1, 0, 0], [0, 0, 1, 0]]
    assert st.edge_row.tolist() == [0, 1, 2, 3]
    assert st.edge_label.tolist() == [0, 0, 0, 0]
    assert st.edge_attr.shape == (4, len(EDGE_FEATURES))
    assert g["terminal", "rev_pays", "customer"].edge_index.tolist() == [[0, 0, 1, 0], [0, 1, 0, 0]]
    np.testing.assert_allclose(st.edge_dt_window.numpy(), [3600, 7200, 10800, 14400])
    # customer spending includes the current and earlier transactions of the window
    np.testing.assert_allclose(np.expm1(col(g, "cust_nb_1")), [1, 1, 2, 3], rtol=1e-5)
    np.testing.assert_allclose(np.expm1(col(g, "cust_avg_30")), [10, 20, 20, 30], rtol=1e-5)
    # hours since the same customer's / terminal's previous transaction (720 = none)
    np.testing.assert_allclose(np.expm1(col(g, "cust_dt_prev")), [720, 720, 2, 1], rtol=1e-5)
    np.testing.assert_allclose(np.expm1(col(g, "term_dt_prev")), [720, 1, 720, 2], rtol=1e-5)
    # Monday, 01:00-04:00 -> not weekend, night (hour <= 6)
    assert col(g, "is_weekend").tolist() == [0, 0, 0, 0]
    assert col(g, "is_night").tolist() == [1, 1, 1, 1]
    # no terminal history yet (delayed window is empty)
    assert np.all(col(g, "term_nb_30") == 0) and np.all(col(g, "term_risk_30") == 0)


def test_state_persists_across_windows_and_ids_are_stable():
    b = HeteroGraphBuilder()
    b.build(W(T0, T0 + D, tx([(3600, "A", "X", 10, 0), (7200, "B", "X", 20, 0)])))
    # two days later: C is new, A comes back; rows continue
    g = b.build(W(T0 + 2 * D, T0 + 3 * D, tx([(2 * D + 3600, "C", "Y", 40, 0), (2 * D + 7200, "A", "Y", 30, 0)], row0=2)))
    assert g["customer"].node_key == ["A", "C"]
    assert g["customer"].node_gid.tolist() == [0, 2]      # A kept id 0, C is the third customer seen
    assert g["terminal"].node_gid.tolist() == [1]
    assert g["customer", "pays", "terminal"].edge_row.tolist() == [2, 3]
    # A: 1 tx today (this one), 2 in 7 days (day-0 10 + today 30), mean 20
    np.testing.assert_allclose(np.expm1(col(g, "cust_nb_1")), [1, 1], rtol=1e-5)
    np.testing.assert_allclose(np.expm1(col(g, "cust_nb_7")), [1, 2], rtol=1e-5)
    np.testing.assert_allclose(np.expm1(col(g, "cust_avg_7")), [40, 20], rtol=1e-5)
    np.testing.assert_allclose(np.expm1(col(g, "cust_dt_prev")), [720, 49], rtol=1e-5)
    # node state (as of the window start, before its transactions): A had 1 tx of 10 in 7 days
    cx = g["customer"].x.numpy()
    np.testing.assert_allclose(np.expm1(cx[0, :3]), [0, 1, 1], rtol=1e-5)
    np.testing.assert_allclose(np.expm1(cx[0, 4]), 10, rtol=1e-5)
    assert np.all(cx[1] == 0)


def test_window_crossing_midnight_and_out_of_order_rows():
    b = HeteroGraphBuilder()
    # rows not in time order; the window spans midnight
    t = tx([(D + 600, "A", "X", 30, 0), (D - 600, "A", "X", 10, 0), (D + 1200, "A", "X", 20, 0)])
    g = b.build(W(T0 + D - 3600, T0 + D + 3600, t))
    # 1-day window counts same calendar day only; 7-day counts all earlier ones
    np.testing.assert_allclose(np.expm1(col(g, "cust_nb_1")), [1, 1, 2], rtol=1e-5)
    np.testing.assert_allclose(np.expm1(col(g, "cust_nb_7")), [2, 1, 3], rtol=1e-5)
    np.testing.assert_allclose(np.expm1(col(g, "cust_dt_prev")), [1 / 3, 720, 1 / 6], rtol=1e-4)


def test_handbook_features_raw_scale():
    b = HeteroGraphBuilder()
    f = b.transform(tx([(5 * D + 8 * 3600, "A", "X", 12.5, 0)]))  # Saturday 08:00
    hb = dict(zip(HANDBOOK_FEATURES, f.handbook[0].tolist()))
    assert hb["TX_AMOUNT"] == 12.5 and hb["TX_DURING_WEEKEND"] == 1 and hb["TX_DURING_NIGHT"] == 0
    assert hb["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 1 and hb["CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW"] == 12.5


def test_state_dict_round_trip_continues_identically():
    rng = np.random.default_rng(1)
    rows = [(float(s), f"c{rng.integers(5)}", f"t{rng.integers(4)}", float(rng.uniform(1, 100)), int(rng.random() < 0.2))
            for s in np.sort(rng.uniform(0, 20 * D, 300))]
    a, b = HeteroGraphBuilder(), HeteroGraphBuilder()
    first, second = tx(rows[:200]), tx(rows[200:], row0=200)
    a.transform(first)
    b.load_state_dict(a.state_dict())
    fa, fb = a.transform(second), b.transform(second)
    np.testing.assert_array_equal(fa.edge, fb.edge)


def test_bad_delay_rejected():
    with pytest.raises(ValueError, match="whole number of days"):
        HeteroGraphBuilder(label_delay_s=3600)

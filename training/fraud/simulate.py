"""A small, seeded transaction simulator in the style of the Fraud Detection Handbook.

Re-implements the handbook's generative rules (Le Borgne et al., ch. 3.2) from their
description, scaled down, for unit tests and the bundled demo sample (so the project
does not redistribute the handbook's data files):

* customers at random points of a 100x100 grid, with a mean amount U(5, 100)
  (std = mean / 2) and a mean of U(0, 4) transactions per day; terminals at random
  points; a customer pays at terminals within ``radius``;
* transactions per day ~ Poisson, time of day ~ N(12 h, 20000 s), amount ~ N(mean, std) > 0;
* fraud scenario 1: amount > 220; scenario 2: ``terminals_per_day`` terminals
  compromised for 28 days (all their transactions are fraud); scenario 3:
  ``customers_per_day`` customers compromised for 14 days (a third of their
  transactions get amount x5 and are fraud).

Output columns are the handbook's (``TRANSACTION_ID, TX_DATETIME, CUSTOMER_ID,
TERMINAL_ID, TX_AMOUNT, TX_TIME_SECONDS, TX_TIME_DAYS, TX_FRAUD, TX_FRAUD_SCENARIO``).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

START = np.datetime64("2018-04-01T00:00:00", "s")


def simulate(n_customers: int = 300, n_terminals: int = 600, n_days: int = 60, radius: float = 12.0,
             terminals_per_day: float = 1.0, customers_per_day: float = 1.0, seed: int = 0) -> pa.Table:
    """Generate a handbook-style transaction table (time-sorted), deterministic for a seed."""
    rng = np.random.default_rng(seed)
    cxy = rng.uniform(0, 100, (n_customers, 2))
    mean_amt = rng.uniform(5, 100, n_customers)
    std_amt = mean_amt / 2
    rate = rng.uniform(0, 4, n_customers)
    txy = rng.uniform(0, 100, (n_terminals, 2))
    d2 = ((cxy[:, None, :] - txy[None, :, :]) ** 2).sum(-1)
    avail = [np.flatnonzero(d2[c] < radius ** 2) for c in range(n_customers)]
    cust, term, secs, amt = [], [], [], []
    for day in range(n_days):
        k = rng.poisson(rate)
        for c in np.flatnonzero(k):
            if len(avail[c]) == 0:
                continue
            t = np.rint(rng.normal(43200, 20000, k[c]))
            t = t[(t > 0) & (t < 86400)]
            if len(t) == 0:
                continue
            a = np.round(np.abs(rng.normal(mean_amt[c], std_amt[c], len(t))), 2)
            cust.append(np.full(len(t), c))
            term.append(rng.choice(avail[c], len(t)))
            secs.append(day * 86400 + t)
            amt.append(a)
    cust = np.concatenate(cust)
    term = np.concatenate(term)
    secs = np.concatenate(secs).astype(np.int64)
    amt = np.concatenate(amt)
    order = np.argsort(secs, kind="stable")
    cust, term, secs, amt = cust[order], term[order], secs[order], amt[order]
    days = secs // 86400
    fraud = np.zeros(len(secs), np.int64)
    scen = np.zeros(len(secs), np.int64)
    s1 = amt > 220
    fraud[s1], scen[s1] = 1, 1
    for day in range(n_days):
        for tm in rng.choice(n_terminals, rng.poisson(terminals_per_day), replace=False):
            m = (term == tm) & (days >= day) & (days < day + 28) & (fraud == 0)
            fraud[m], scen[m] = 1, 2
        for c in rng.choice(n_customers, rng.poisson(customers_per_day), replace=False):
            idx = np.flatnonzero((cust == c) & (days >= day) & (days < day + 14) & (fraud == 0))
            pick = idx[rng.random(len(idx)) < 1 / 3]
            amt[pick] = np.round(amt[pick] * 5, 2)
            fraud[pick], scen[pick] = 1, 3
    return pa.table({
        "TRANSACTION_ID": np.arange(len(secs), dtype=np.int64),
        "TX_DATETIME": pa.array((START + secs.astype("timedelta64[s]")).astype("datetime64[ns]")),
        "CUSTOMER_ID": cust.astype(np.int64), "TERMINAL_ID": term.astype(np.int64), "TX_AMOUNT": amt,
        "TX_TIME_SECONDS": secs, "TX_TIME_DAYS": days.astype(np.int64), "TX_FRAUD": fraud, "TX_FRAUD_SCENARIO": scen,
    })


if __name__ == "__main__":  # regenerate the bundled sample
    import sys

    import pyarrow.parquet as pq

    out = sys.argv[1] if len(sys.argv) > 1 else "samples/fraud/fdh-style-sim-300c-60d.parquet"
    tbl = simulate()
    pq.write_table(tbl, out, compression="zstd")
    print(out, tbl.num_rows, "transactions,", int(np.asarray(tbl["TX_FRAUD"]).sum()), "frauds")

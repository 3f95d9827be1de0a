"""`graphsentry score`: score inputs with a trained model.

Output contract (stable; outside evaluations rely on it): one Parquet row per input record, in
input order, columns ``row, uid, ts, score, alert, top_technique, reason``. ``reason`` is null when
the record was scored and says why otherwise (``late``, ``invalid_ts``, ``error:<type>``); such
records have a null ``score`` and ``alert = false``. They never vanish.
"""
from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)


def register(subparsers: "argparse._SubParsersAction") -> None:
    """Add subcommands: score."""
    p = subparsers.add_parser(
        "score", help="score flow/transaction files with a trained model (one output row per input record)",
        description="Score every input record with MODEL_DIR and write row, uid, ts, score, alert, "
                    "top_technique, reason to a Parquet file, one row per input record in input order.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="input files (any format the readers know)")
    p.add_argument("--model", required=True, metavar="MODEL_DIR", help="directory written by `graphsentry train`")
    p.add_argument("--format", default="auto", help="input format (default: auto-detect)")
    p.add_argument("--mapping", default=None, help="column mapping file for generic CSV/JSON inputs")
    p.add_argument("--out", required=True, metavar="SCORES.parquet", help="output Parquet file")
    p.add_argument("--dead-letter", default=None, help="JSON-lines file for malformed input lines")
    p.add_argument("--stream-order", action="store_true",
                   help="window records in input order with the model's allowed lateness, like the daemon "
                        "(late records get reason 'late'); default: event-time order, nothing is late")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from detector.bundle import load_bundle, model_kind
    from ingest.cli_ingest import require_parent
    from detector.scoring import score_batches
    from ingest.readers import open_inputs
    from ingest.schema import FLOW_SCHEMA, TX_SCHEMA

    for path in args.inputs:
        if not Path(path).exists():
            raise FileNotFoundError(f"input not found: {path}")
    require_parent(args.out, "--out")
    require_parent(args.dead_letter, "--dead-letter")
    if model_kind(args.model) == "transactions":
        # transaction models have their own scorer (detector.fraud, owned by the fraud area)
        from detector.fraud.scoring import score as fraud_score

        summary = fraud_score(args.model, args.inputs, args.out)
        print(f"{args.out}: {summary}")
        return 0
    bundle = load_bundle(args.model)
    t0 = time.perf_counter()
    # the detector's one-time costs overlap the reading of the first inputs (pyarrow parses without the GIL)
    warm = threading.Thread(target=bundle.warm_up, name="warm-up", daemon=True)
    warm.start()
    try:  # whatever fails, the warm-up thread ends before the process does (else: abort at exit)
        reader = open_inputs(args.inputs, format=args.format, mapping=args.mapping, dead_letter=args.dead_letter)
        if getattr(bundle, "kind", "flows") != getattr(reader, "kind", "flows"):
            raise ValueError(f"model {args.model} scores {bundle.kind!r} but the inputs are {reader.kind!r}")
        empty = TX_SCHEMA if getattr(reader, "kind", "flows") == "transactions" else FLOW_SCHEMA
        # scoring starts while the later inputs are still being read (read-ahead threads)
        out = score_batches(bundle, reader, stream_order=args.stream_order, schema=empty)
    finally:
        warm.join()
    # dictionaries only where values repeat (numbers and times gain nothing from one: ~2x faster write)
    pq.write_table(out, args.out, use_dictionary=["top_technique", "reason"])
    dt = time.perf_counter() - t0
    stats = getattr(reader, "stats", None)
    malformed = sum(getattr(stats, "malformed", {}).values()) if stats is not None else 0
    n = out.num_rows
    scored = out.column("reason").null_count  # null reason = scored
    alerts = int(pa.compute.sum(out.column("alert")).as_py() or 0) if n else 0
    print(f"{n} records -> {args.out}: {scored} scored, {n - scored} unscorable, {alerts} alerts, "
          f"{malformed} malformed input lines (dead-lettered), {n / max(dt, 1e-9):.0f} records/s")
    _warn_if_misfit(bundle, args.model, alerts, scored)
    return 0


def _warn_if_misfit(bundle, model_dir: str, flagged: int, scored: int) -> None:
    """One warning line when far more records are flagged than the model was calibrated for."""
    from detector.fit_check import check_fit

    target = getattr(getattr(bundle, "calibration", None), "target_fpr", None)
    v = check_fit(flagged, scored, target)
    if not v.fits:
        msg = v.message(str(model_dir).rstrip("/"))
        print(f"warning: {msg}", file=sys.stderr)

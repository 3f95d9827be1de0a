"""`graphsentry score`: score inputs with a trained model.

Output contract (stable; outside evaluations rely on it): one Parquet row per input record, in
input order, columns ``row, uid, ts, score, alert, top_technique, reason``. ``reason`` is null when
the record was scored and says why otherwise (``late``, ``invalid_ts``, ``error:<type>``); such
records have a null ``score`` and ``alert = false``. They never vanish.

``--grace DUR|N`` (docs/calibration.md): the first ``DUR`` of event time (``30m``, ``2h``, ``900s``) or the
first ``N`` scored records (a bare integer) of the inputs, in event-time order, are the grace period. They are
scored and written like the others, their ``alert`` decided by the model's trained threshold (no blind spot
while the deployed threshold is unknown); after it the records are alerted window by window with the threshold
deployed by :class:`detector.grace.GraceCalibrator` (``--grace-method``, default ``robust``), which then
tracks slow drift within its bounds. The summary prints both thresholds.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
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
    p.add_argument("--grace", default=None, metavar="DUR|N",
                   help="grace-period calibration: the first DUR of event time (e.g. 30m, 2h) or N records set "
                        "the deployed threshold on this traffic, without labels (docs/calibration.md)")
    p.add_argument("--grace-method", default="robust", choices=("robust", "quantile", "trained"),
                   help="robust: entity-trimmed quantile (default); quantile: plain grace quantile; trained: off")
    p.add_argument("--target-fpr", type=float, default=None,
                   help="benign FPR the deployed threshold aims at (default: the model's)")
    p.add_argument("--findings", default=None, metavar="FINDINGS.jsonl",
                   help="also write the OCSF findings of the flagged records, grouped and folded into ongoing "
                        "incidents as the daemon does (docs/findings.md)")
    p.add_argument("--incident-gap", type=float, default=600.0, metavar="SECONDS",
                   help="with --findings: a pause longer than this opens a new finding (default: 600)")
    p.set_defaults(func=run)


def parse_grace(text: str) -> tuple[int | None, float | None]:
    """``"5000"`` -> (5000 records, None); a duration (``"30m"``, ``"2h"``, ``"90s"``, ``"1d"``, as
    :func:`ingest.windows.parse_duration` reads them) -> (None, seconds)."""
    from ingest.windows import parse_duration

    t = str(text).strip()
    if t.isdigit():
        if int(t) < 1:
            raise ValueError(f"--grace must be a positive record count or a duration, got {text!r}")
        return int(t), None
    try:
        seconds = parse_duration(t)
    except ValueError:
        seconds = 0.0
    if seconds <= 0:
        raise ValueError(f"--grace must be N records (e.g. 5000) or a duration (e.g. 30m, 2h, 900s), got {text!r}")
    return None, seconds


class _EntityTap:
    """Passes the reader's batches through, keeping each record's grace entity (in input order)."""

    def __init__(self, reader) -> None:
        self.reader = reader
        self.parts: list = []

    def __iter__(self):
        from detector.grace import flow_entities

        for b in self.reader:
            self.parts.append(flow_entities(b))
            yield b

    def entities(self):
        import numpy as np

        return np.concatenate(self.parts) if self.parts else np.zeros(0, dtype=object)


def apply_grace(out, entities, calibrator, window: float):
    """``out`` (the scores table) with ``alert`` decided by ``calibrator`` in event-time order, window by window
    of ``window`` seconds (grace records keep the trained threshold's decision)."""
    import numpy as np
    import pyarrow as pa

    score = out.column("score").to_numpy(zero_copy_only=False).astype(np.float64)  # NaN: unscored
    ts = out.column("ts").cast(pa.int64()).to_numpy(zero_copy_only=False).astype(np.float64) / 1e6
    ok = np.flatnonzero(np.isfinite(score) & np.isfinite(ts))
    order = ok[np.lexsort((ok, ts[ok]))]
    alert = np.zeros(out.num_rows, dtype=bool)
    if order.size:
        bucket = np.floor(ts[order] / window)
        edges = np.flatnonzero(np.diff(bucket)) + 1
        for lo, hi in zip(np.r_[0, edges], np.r_[edges, order.size]):
            sel = order[lo:hi]
            alert[sel] = calibrator.process(score[sel], entities[sel], ts[sel])
        calibrator.finish_grace()  # inputs shorter than the grace period: calibrated on what there was
    i = out.schema.get_field_index("alert")
    return out.set_column(i, out.schema.field("alert"), pa.array(alert, pa.bool_()))


def run(args: argparse.Namespace) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from detector.bundle import load_bundle, model_kind
    from detector.scoring import score_batches
    from ingest.cli_ingest import require_parent
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
    grace = parse_grace(args.grace) if args.grace is not None else None
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
        tap = _EntityTap(reader) if grace is not None else None
        # scoring starts while the later inputs are still being read (read-ahead threads)
        out = score_batches(bundle, tap if tap is not None else reader, stream_order=args.stream_order,
                            schema=empty)
    finally:
        warm.join()
    cal = None
    if grace is not None:
        from detector.grace import GraceCalibrator

        target = args.target_fpr if args.target_fpr is not None else bundle.calibration.target_fpr
        cal = GraceCalibrator(float(bundle.threshold), float(target), grace_records=grace[0],
                              grace_seconds=grace[1], method=args.grace_method)
        out = apply_grace(out, tap.entities(), cal, float((bundle.window or {}).get("size", 60.0)))
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
    if cal is not None:
        g = cal.summary()
        after = "n/a" if cal.calibrated_threshold_ is None else f"{cal.calibrated_threshold_:.6g}"
        print(f"threshold: trained {cal.trained_threshold:.6g}, deployed {after} after a grace period of "
              f"{g['grace_records']} records ({args.grace_method}; {g['kept']} kept, trimmed entities: "
              f"{', '.join(g['trimmed_entities']) or 'none'}), final {cal.threshold_:.6g}")
        if cal.undersized_ and cal.method != "trained":
            print(f"warning: the grace period kept only {cal.n_kept_} records; a {cal.target_fpr:g} target needs "
                  f"about {math.ceil(10 / cal.target_fpr)} for a stable threshold (use a longer --grace)",
                  file=sys.stderr)
        if cal.in_grace_ or cal.calibrated_threshold_ is None:
            print("warning: no scored records to calibrate on; the trained threshold was used", file=sys.stderr)
    _warn_if_misfit(bundle, args.model, alerts, scored)
    if args.findings:
        from detector.alerts.offline import write_findings

        require_parent(args.findings, "--findings")
        batches = list(open_inputs(args.inputs, format=args.format, mapping=args.mapping))
        records = pa.Table.from_batches(batches) if batches else empty.empty_table()
        if records.num_rows != n:
            raise ValueError(f"the inputs changed while being scored ({records.num_rows} records, {n} scores)")
        f = write_findings(records, out, args.findings, float((bundle.window or {}).get("size", 60.0)),
                           cal.threshold_ if cal is not None else float(bundle.threshold),
                           model_version=Path(args.model).resolve().name, incident_gap=args.incident_gap)
        print(f"{f['findings']} findings ({f['writes']} writes with their updates) -> {args.findings}")
    return 0


def _warn_if_misfit(bundle, model_dir: str, flagged: int, scored: int) -> None:
    """One warning line when far more records are flagged than the model was calibrated for."""
    from detector.fit_check import check_fit

    target = getattr(getattr(bundle, "calibration", None), "target_fpr", None)
    v = check_fit(flagged, scored, target)
    if not v.fits:
        msg = v.message(str(model_dir).rstrip("/"))
        print(f"warning: {msg}", file=sys.stderr)

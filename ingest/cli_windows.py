"""`graphsentry windows`: cut inputs into event-time windows and graphs, print their sizes."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from datetime import datetime, timezone
from typing import Any

log = logging.getLogger("ingest.windows")

EPILOG = """\
Windows are over event time (the records' own ts), not arrival time:
  --window 60s                  tumbling windows [t, t+60s)
  --window 60s --slide 30s      sliding windows of 60 s every 30 s (each record in 2 windows)
  --lateness 10s                a window closes once a record 10 s past its end has been seen;
                                records for closed windows are LATE: counted and left out of
                                the windows, never dropped silently (--late-out writes them to
                                Parquet); when more than 20% are late a warning names a
                                --lateness that covers the input's measured disorder
Durations: a number with a unit ms, s, m, h or d (250ms, 60s, 5m, 1h, 1d) or bare seconds.
Empty windows are not printed. Transactions are summarised per window as customers, terminals,
transactions and frauds.

Nodes (--node-mode): ip = address; ipport = address:port (E-GraphSAGE); as = the address field,
which LUFlow fills with autonomous-system numbers.

examples:
  graphsentry windows samples/stratosphere/*.labeled --window 60s
  graphsentry windows day1.zip day2.zip --window 10m --lateness 1d --node-mode as
  graphsentry windows conn.log --window 60s --slide 30s --node-mode ipport --json > windows.jsonl

LUFlow day files are not in time order (flows lag up to ~22 h behind the newest one
in the same file): use --lateness 1d there or most records are late.

Files that cannot be read are skipped and counted (unreadable_file), malformed records are
dead-lettered; the summary says how many were skipped (see docs/bad-input.md).
Exit status: 0 ok, 2 usage/format error, 3 nothing could be read.
"""


def _duration(text: str) -> float:
    from ingest.windows import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_duration(text: str) -> float:
    v = _duration(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: must be > 0")
    return v


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add subcommands: windows."""
    p = subparsers.add_parser(
        "windows",
        help="cut inputs into event-time windows and graphs; print per-window graph sizes",
        description="Read inputs (any format `graphsentry ingest` knows), assign records to tumbling or "
        "sliding event-time windows with a watermark and allowed lateness, build one graph per window "
        "(nodes = endpoints, one edge per flow) and print per window: start, end, nodes, edges and "
        "malicious edges (when labelled); then records, late and malformed counts.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="input files, read in this order (row ids follow it)")
    p.add_argument("--window", type=_positive_duration, default=60.0, metavar="DUR",
                   help="window size (default 60s)")
    p.add_argument("--slide", type=_positive_duration, default=None, metavar="DUR",
                   help="hop between window starts for sliding windows, <= --window (default: tumbling)")
    p.add_argument("--lateness", type=_duration, default=10.0, metavar="DUR",
                   help="allowed lateness behind the newest event time seen (default 10s)")
    p.add_argument("--node-mode", dest="node_mode", choices=("ip", "ipport", "as"), default="ip",
                   help="what a node is: ip, ipport (ip:port) or as (default ip)")
    p.add_argument("--node", dest="node_mode", choices=("ip", "ipport", "as"), help=argparse.SUPPRESS)
    p.add_argument("--format", default="auto", metavar="NAME",
                   help="input format: auto (default) or a name from `graphsentry ingest --help`")
    p.add_argument("--mapping", metavar="FILE", default=None, help="column-mapping config for other CSV/TSV")
    p.add_argument("--dead-letter", metavar="FILE", default=None,
                   help="append malformed records here as JSON lines (default: count and log only)")
    p.add_argument("--late-out", metavar="FILE.parquet", default=None,
                   help="write late records (the side output) to this Parquet file")
    p.add_argument("--preprocessor", metavar="FILE.json", default=None,
                   help="fitted FlowPreprocessor to compute edge features with (default: none, sizes only)")
    p.add_argument("--id-capacity", type=int, default=1_000_000, metavar="N",
                   help="endpoints remembered for stable node ids (LRU; default 1000000)")
    p.add_argument("--batch-size", type=int, default=65536, metavar="N", help="records per read batch (default 65536)")
    p.add_argument("--json", action="store_true", help="one JSON object per window, then a summary object")
    p.add_argument("--summary-only", action="store_true", help="print only the totals, not each window")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=run)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + ("Z" if t == int(t) else f".{int(round((t % 1) * 1e6)):06d}Z")


def _tx_summary(table: Any) -> tuple[int, int, int | None]:
    """(nodes = customers + terminals, edges = transactions, frauds or None) of a transaction window."""
    import pyarrow.compute as pc

    nodes = pc.count_distinct(table.column("customer_id")).as_py() + pc.count_distinct(table.column("terminal_id")).as_py()
    lab = table.column("label")
    bad = None if lab.null_count == len(lab) else int(pc.sum(pc.equal(lab, 1)).as_py() or 0)
    return nodes, table.num_rows, bad


def run(args: argparse.Namespace) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm import tqdm

    from ingest.cli_ingest import require_parent, skipped_line
    from ingest.disorder import Disorder, late_warning
    from ingest.features import FlowPreprocessor
    from ingest.graph import GraphBuilder, NodeIdMap
    from ingest.readers import open_inputs
    from ingest.windows import EventTimeWindower, Sliding, Tumbling

    if args.slide is not None and args.slide > args.window:
        raise ValueError(f"--slide ({args.slide:g}s) must be <= --window ({args.window:g}s)")
    windower = Sliding(args.window, args.slide) if args.slide not in (None, args.window) else Tumbling(args.window)
    require_parent(args.late_out, "--late-out")
    require_parent(args.dead_letter, "--dead-letter")
    t0 = time.perf_counter()
    reader = open_inputs(args.inputs, format=args.format, mapping=args.mapping,
                         dead_letter=args.dead_letter, batch_size=args.batch_size)
    pre = FlowPreprocessor.load(args.preprocessor) if args.preprocessor else None
    builder = GraphBuilder(args.node_mode, preprocessor=pre, id_map=NodeIdMap(args.id_capacity))
    win = EventTimeWindower(windower, lateness=args.lateness)
    disorder = Disorder()
    out = sys.stdout
    totals = {"windows": 0, "edges": 0, "malicious_edges": 0, "max_nodes": 0, "max_edges": 0}
    late_writer: list[Any] = []

    if not args.json and not args.summary_only:
        cols = ("start", "end", "nodes", "edges", "malicious") if reader.kind == "flows" else (
            "start", "end", "nodes", "tx", "fraud")
        print(f"{cols[0]:<27} {cols[1]:<27} {cols[2]:>8} {cols[3]:>9} {cols[4]:>9}", file=out)

    bar = tqdm(total=None, unit="rec", unit_scale=True, file=sys.stderr, delay=0.5,
               disable=True if args.no_progress else None, desc="windows")

    def report(closed: list) -> None:
        if not closed:
            return
        if reader.kind == "flows":
            sizes = []
            for w, g in zip(closed, builder.build_many(closed)):
                lab = g.edge_label
                bad = int((lab == 1).sum()) if bool((lab >= 0).any()) else None
                sizes.append((w, len(g.node_key), g.edge_index.size(1), bad))  # PyG's num_edges is slow
        else:
            sizes = [(w, *_tx_summary(w.table)) for w in closed]
        for w, n, e, bad in sizes:
            totals["windows"] += 1
            totals["edges"] += e
            totals["malicious_edges"] += bad or 0
            totals["max_nodes"] = max(totals["max_nodes"], n)
            totals["max_edges"] = max(totals["max_edges"], e)
            if args.summary_only:
                continue
            if args.json:
                line = json.dumps({"start": w.start, "end": w.end, "nodes": n, "edges": e, "malicious": bad})
            else:
                line = f"{_iso(w.start):<27} {_iso(w.end):<27} {n:>8} {e:>9} {'-' if bad is None else bad:>9}"
            bar.write(line, file=out)

    def drain_late() -> None:
        late = win.drain_late()
        if args.late_out and late:
            if not late_writer:
                late_writer.append(pq.ParquetWriter(args.late_out, late[0].schema, compression="zstd"))
            for b in late:
                late_writer[0].write_table(pa.Table.from_batches([b]).cast(late_writer[0].schema))

    try:
        for batch in reader:
            bar.update(batch.num_rows)
            disorder.push(batch)
            report(win.push(batch))
            drain_late()
        report(win.flush())
        drain_late()
    finally:
        bar.close()
        reader.close()
        if late_writer:
            late_writer[0].close()

    elapsed = time.perf_counter() - t0
    st = reader.stats
    summary = {
        "kind": reader.kind,
        "window": args.window,
        "slide": args.slide or args.window,
        "lateness": args.lateness,
        "node_mode": args.node_mode,
        "records": st.rows_ok,
        "windows": totals["windows"],
        "graph_edges": totals["edges"],
        "malicious_edges": totals["malicious_edges"],
        "max_nodes": totals["max_nodes"],
        "max_edges": totals["max_edges"],
        "late": win.stats.late,
        "late_partial": win.stats.late_partial,
        "invalid_ts": win.stats.invalid,
        "max_disorder_s": disorder.max_jump_s,
        "malformed": st.records_malformed,
        "malformed_by_reason": dict(sorted(st.malformed.items())),
        "files_skipped": st.files_failed,
        "dead_letter": args.dead_letter,
        "id_evictions": builder.id_map.evictions,
        "elapsed_s": round(elapsed, 3),
        "records_per_s": round(st.rows_ok / elapsed) if elapsed > 0 else None,
    }
    warning = late_warning(win.stats.late, win.stats.records, args.lateness, disorder)
    if warning:
        log.warning("%s", warning)
    summary["late_warning"] = warning
    if args.json:
        print(json.dumps({"summary": summary}), file=out)
    else:
        mal = summary["malformed_by_reason"]
        print(f"records:   {st.rows_ok}", file=out)
        print(f"windows:   {totals['windows']} (largest: {totals['max_nodes']} nodes, {totals['max_edges']} edges; "
              f"{totals['edges']} graph edges in all)", file=out)
        print(f"late:      {win.stats.late}" + (f" (of which {win.stats.late_partial} still in a later window)"
                                                  if win.stats.late_partial else "")
              + (f" -> {args.late_out}" if args.late_out and win.stats.late else ""), file=out)
        if win.stats.invalid:
            print(f"no ts:     {win.stats.invalid}", file=out)
        if warning:
            print(f"warning:   {warning}", file=out)
        print(f"malformed: {st.rows_malformed}" + (" (" + ", ".join(f"{k}={v}" for k, v in mal.items()) + ")" if mal else ""),
              file=out)
        for k in st.files_failed:
            e = st.per_file[k].error
            print(f"file error: {e}" if k in e else f"file error: {k}: {e}", file=out)
        skipped = skipped_line(st, args.dead_letter)
        if skipped:
            print(skipped, file=out)
        print(f"elapsed:   {elapsed:.2f} s ({summary['records_per_s'] or 0:,} records/s)", file=out)
    return 0

"""`graphsentry ingest`: read inputs into the canonical schema."""
from __future__ import annotations

import argparse
import os
import sys
import time


def _epilog() -> str:
    from ingest.readers import FORMATS
    lines = ["formats (--format):", "  auto          sniff each input from its header / magic bytes (default)"]
    lines += [f"  {name:<13} {info.description}" for name, info in FORMATS.items()]
    lines += [
        "",
        "examples:",
        "  graphsentry ingest samples/stratosphere/*.labeled --out flows.parquet",
        "  graphsentry ingest day1.zip day2.zip --format luflow --dead-letter bad.jsonl --out luflow.parquet",
        "  graphsentry ingest capture.pcap --out flows.parquet",
        "  graphsentry ingest export.csv --mapping mapping.yaml --out flows.parquet",
        "",
        "Malformed records never stop the run: they are counted by reason, the first few are",
        "logged, and all go to --dead-letter (JSON lines: source, line, reason, raw). A file that",
        "cannot be read at all is skipped and counted as unreadable_file (see docs/bad-input.md).",
        "Exit status: 0 ok, 2 usage/format error, 3 nothing could be read.",
    ]
    return "\n".join(lines)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add subcommands: ingest."""
    p = subparsers.add_parser(
        "ingest",
        help="read flow/transaction inputs into one canonical Parquet file",
        description="Read flow logs, captures or transaction files (any mix of files of one kind, in order) "
                    "into the canonical flow or transaction schema and write them as Parquet. Prints rows "
                    "read, malformed rows by reason, elapsed time and rate.\n\n" + _epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="input files (zip archives are read member by member); record ids follow this order")
    p.add_argument("--format", default="auto", metavar="NAME",
                   help="input format: auto (default) or one of the names listed below")
    p.add_argument("--mapping", metavar="FILE", default=None,
                   help="column-mapping config (YAML/JSON) for any other CSV/TSV; see README.md (Input readers)")
    p.add_argument("--dead-letter", metavar="FILE", default=None,
                   help="append malformed records here as JSON lines (default: count and log only)")
    p.add_argument("--out", "-o", metavar="OUT.parquet", required=True, help="output Parquet file")
    p.add_argument("--batch-size", type=int, default=65536, metavar="N",
                   help="records per batch (bounds memory; default 65536)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=run)


def require_parent(path: str | None, option: str) -> None:
    """``ValueError`` naming the fix when ``path``'s directory does not exist (it is never created)."""
    if not path:
        return
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ValueError(f"{option} {path}: directory {parent} does not exist; create it first")


def skipped_line(stats, dead_letter: str | None) -> str | None:
    """The summary line for what a read skipped (files and records) and where the dead letters are."""
    files = stats.files_failed
    if not files and not stats.records_malformed:
        return None
    where = f"dead letters in {dead_letter}" if dead_letter else "not kept: pass --dead-letter FILE to keep them"
    return f"skipped:   {len(files)} file(s), {stats.records_malformed} record(s); {where}"


def run(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq
    from tqdm import tqdm

    from ingest.readers import open_inputs

    require_parent(args.out, "--out")
    require_parent(args.dead_letter, "--dead-letter")
    t0 = time.perf_counter()
    reader = open_inputs(args.inputs, format=args.format, mapping=args.mapping,
                         dead_letter=args.dead_letter, batch_size=args.batch_size)
    total_bytes = sum(os.path.getsize(p) for p in args.inputs)
    # the bar counts records; it only shows for long inputs (> 0.5 s) and on a terminal
    bar = tqdm(total=None, unit="rec", unit_scale=True, file=sys.stderr, delay=0.5,
               disable=True if args.no_progress else None, desc="ingest")
    tmp = args.out + ".part"
    writer = pq.ParquetWriter(tmp, reader.schema, compression="zstd")
    done = False
    try:
        for batch in reader:
            writer.write_batch(batch)
            bar.update(batch.num_rows)
        done = True
    finally:
        writer.close()
        bar.close()
        reader.close()
        if not done:  # nothing readable (or interrupted): no half-written output is left behind
            os.unlink(tmp)
    os.replace(tmp, args.out)
    elapsed = time.perf_counter() - t0
    st = reader.stats
    rate = st.rows_ok / elapsed if elapsed > 0 else 0.0
    print(f"inputs:    {len(reader.plan)} ({', '.join(sorted(set(reader.formats)))}; {total_bytes / 1e6:.1f} MB)")
    print(f"kind:      {reader.kind}")
    print(f"rows read: {st.rows_ok}")
    print(f"malformed: {st.rows_malformed}" + (
        " (" + ", ".join(f"{k}={v}" for k, v in sorted(st.malformed.items())) + ")" if st.malformed else ""))
    if st.unknown_fields:
        print("unknown fields ignored: " + ", ".join(f"{k}={v}" for k, v in sorted(st.unknown_fields.items())))
    for k in st.files_failed:
        e = st.per_file[k].error
        print(f"file error: {e}" if k in e else f"file error: {k}: {e}")
    skipped = skipped_line(st, args.dead_letter)
    if skipped:
        print(skipped)
    print(f"elapsed:   {elapsed:.2f} s")
    print(f"rate:      {rate:,.0f} records/s")
    print(f"output:    {args.out}")
    return 0

"""``graphsentry evaluate``: time-ordered evaluation against baselines and ablations (flows), or the
Fraud Detection Handbook protocol (transactions)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ingest.cli_ingest import require_parent
from training.commands import input_kind, read_table, window_seconds


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``evaluate``."""
    e = subparsers.add_parser(
        "evaluate", help="time-ordered evaluation of the model against baselines and ablations",
        description="Train on --train (earlier), score --test (later / other captures), compare with "
                    "IsolationForest on raw features, Anomal-E (DGI + IsolationForest) and ablations; "
                    "write report.json, report.md and PR/ROC curves.")
    e.add_argument("--train", nargs="+", required=True, metavar="INPUT")
    e.add_argument("--test", nargs="+", required=True, metavar="INPUT")
    e.add_argument("--report", required=True, metavar="DIR")
    e.add_argument("--format", default="auto")
    e.add_argument("--kind", choices=["auto", "flows", "transactions"], default="auto",
                   help="transactions: the Fraud Detection Handbook protocol (rolling folds over --train and "
                        "--test taken together, in time order); default: sniffed from the input")
    e.add_argument("--window", default=None, help="window size (default: 60s for flows, 1d for transactions)")
    e.add_argument("--epochs", type=int, default=3)
    e.add_argument("--benign-only", action="store_true", default=True,
                   help="drop malicious-labelled training records (default: on)")
    e.add_argument("--with-malicious", dest="benign_only", action="store_false",
                   help="keep malicious-labelled records in training (unsupervised contaminated setting)")
    e.add_argument("--max-train", type=int, default=0, help="subsample training records to this many (0: all)")
    e.add_argument("--max-test", type=int, default=0, help="subsample test records to this many (0: all)")
    e.add_argument("--variants", default="all",
                   help="comma list of: ours,no_temporal,no_knowledge,no_pretrain,fixed_weights,dgi_ours,"
                        "anomal_e,iforest_raw (default: all)")
    e.add_argument("--name", default=None, help="split name for the report title")
    e.add_argument("--seed", type=int, default=0)
    e.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    require_parent(args.report, "--report")
    kind = input_kind(args.train, args.format, args.kind)
    if kind == "transactions":
        from training.fraud import evaluate as evaluate_transactions

        rep = evaluate_transactions(list(args.train) + list(args.test), args.report,
                                    window_s=window_seconds(args, kind), epochs=args.epochs, seed=args.seed)
        print((Path(args.report) / "report.md").read_text())
        return 0 if rep.get("summary") else 1
    if args.window is None:
        args.window = "60s"
    return _evaluate_flows(args)


def _evaluate_flows(args: argparse.Namespace) -> int:
    from ingest.windows import parse_duration
    from training.evaluate import BASELINES, DEFAULT_VARIANTS, VARIANTS, evaluate_split, subsample, write_report
    from training.pretrain import TrainConfig

    variants = DEFAULT_VARIANTS if args.variants == "all" else tuple(v.strip() for v in args.variants.split(","))
    bad = [v for v in variants if v not in VARIANTS and v not in BASELINES]
    if bad:
        raise ValueError(f"unknown variants {bad}; choose from {sorted(VARIANTS) + list(BASELINES)}")
    train, _ = read_table(args.train, args.format)
    test, _ = read_table(args.test, args.format)
    train = subsample(train, args.max_train, args.seed)
    test = subsample(test, args.max_test, args.seed)
    cfg = TrainConfig(window=parse_duration(args.window), epochs=args.epochs, benign_only=args.benign_only,
                      seed=args.seed)
    name = args.name or f"{' '.join(Path(p).name for p in args.train)} -> {' '.join(Path(p).name for p in args.test)}"
    rep = evaluate_split(train, test, cfg, variants, name=name)
    write_report(rep, args.report)
    print(f"report written to {args.report}/report.md")
    return 0

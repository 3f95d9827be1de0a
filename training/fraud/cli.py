"""`graphsentry fraud train|score|evaluate`: transaction streams on their own.

``register_fraud(subparsers)`` adds the ``fraud`` command group; the lead wires it
into ``graphsentry`` (``training.cli``). Also runnable alone:
``python -m training.fraud.cli fraud evaluate ...``.
"""
from __future__ import annotations

import argparse
import json
import sys

from training.commands import input_paths, inputs_argument


def _duration(text: str) -> float:
    """'86400', '6h', '1d', '30m', '45s' -> seconds."""
    t = text.strip().lower()
    mult = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if t and t[-1] in mult:
            return float(t[:-1]) * mult[t[-1]]
        return float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad duration {text!r}: use e.g. 86400, 6h, 1d") from None


def _train(args: argparse.Namespace) -> int:
    from training.fraud import train

    res = train(input_paths(args), args.out, epochs=args.epochs, window_s=args.window, seed=args.seed, hidden=args.hidden,
                use_graph=not args.no_graph, lam=args.lam, label_delay_days=args.label_delay_days,
                val_days=args.val_days, alert_rate=args.alert_rate, progress=not args.quiet)
    print(json.dumps(res, indent=2, default=float))
    return 0


def _score(args: argparse.Namespace) -> int:
    from detector.fraud import score

    res = score(args.model, args.inputs, args.out, window_s=args.window, use_labels=not args.ignore_labels)
    print(json.dumps(res, indent=2, default=float))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from training.fraud import evaluate

    rep = evaluate(input_paths(args), args.report, folds=args.folds, train_days=args.train_days, delay_days=args.delay_days,
                   test_days=args.test_days, window_s=args.window, epochs=args.epochs, hidden=args.hidden,
                   seed=args.seed, alert_rate=args.alert_rate, progress=not args.quiet,
                   ablations=tuple(a for a in args.ablations.split(",") if a),
                   baselines=tuple(b for b in args.baselines.split(",") if b),
                   extras=tuple(x for x in args.extras.split(",") if x))
    print((__import__("pathlib").Path(args.report) / "report.md").read_text())
    return 0 if rep["summary"] else 1


def register_fraud(subparsers: argparse._SubParsersAction) -> None:
    """Add ``fraud`` with ``train``, ``score`` and ``evaluate`` subcommands."""
    p = subparsers.add_parser("fraud", help="transaction streams: fraud detection on heterogeneous temporal graphs",
                              description="Fraud detection on customer-terminal transaction graphs (TMR-GGNN style).")
    sub = p.add_subparsers(dest="fraud_command", metavar="SUBCOMMAND")
    sub.required = True

    t = sub.add_parser("train", help="train a transaction model (MODEL_DIR with config.json kind=transactions)")
    inputs_argument(t, "transaction files (FDH or TX_SCHEMA parquet/csv)")
    t.add_argument("--out", required=True, metavar="MODEL_DIR", help="where to write the model")
    t.add_argument("--epochs", type=int, default=15, help="max epochs (early stopping on validation AP; default 15)")
    t.add_argument("--window", type=_duration, default=86400.0, help="window length, e.g. 1d, 6h (default 1d)")
    t.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    t.add_argument("--hidden", type=int, default=64, help="hidden size (default 64)")
    t.add_argument("--no-graph", action="store_true", help="ablation: no message passing, transaction features only")
    t.add_argument("--lam", type=float, default=0.2, help="weight of the contrastive loss (default 0.2; 0 = off)")
    t.add_argument("--label-delay-days", type=int, default=7, help="days until a fraud label is known (default 7)")
    t.add_argument("--val-days", type=int, default=3, help="last labelled days kept for validation (default 3)")
    t.add_argument("--alert-rate", type=float, default=0.01,
                   help="threshold = validation score quantile giving this alert rate (default 0.01)")
    t.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    t.set_defaults(func=_train)

    s = sub.add_parser("score", help="score transactions: one output row per input record, in input order")
    s.add_argument("--model", required=True, metavar="MODEL_DIR")
    s.add_argument("inputs", nargs="+", metavar="INPUT")
    s.add_argument("--out", required=True, metavar="SCORES.parquet",
                   help="columns: row, tx_id, ts, score, alert, reason")
    s.add_argument("--window", type=_duration, default=None, help="window length (default: the model's)")
    s.add_argument("--ignore-labels", action="store_true",
                   help="do not use labels in the inputs as (delayed) fraud feedback")
    s.set_defaults(func=_score)

    e = sub.add_parser("evaluate", help="Fraud Detection Handbook protocol with rolling folds and baselines")
    inputs_argument(e, "transaction files, in any order (folds follow event time)")
    e.add_argument("--report", required=True, metavar="DIR", help="writes report.json and report.md")
    e.add_argument("--folds", type=int, default=3, help="rolling folds (default 3)")
    e.add_argument("--train-days", type=int, default=14, help="training days per fold (default 14)")
    e.add_argument("--delay-days", type=int, default=7, help="delay period = label delay in days (default 7)")
    e.add_argument("--test-days", type=int, default=7, help="test days per fold (default 7)")
    e.add_argument("--window", type=_duration, default=86400.0, help="window length (default 1d)")
    e.add_argument("--epochs", type=int, default=15, help="max epochs for the neural models (default 15)")
    e.add_argument("--hidden", type=int, default=64, help="hidden size (default 64)")
    e.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    e.add_argument("--alert-rate", type=float, default=0.01, help="target alert rate for thresholds (default 0.01)")
    e.add_argument("--ablations", default="no_graph,no_contrastive",
                   help="comma list of ours_* ablations: no_graph, no_contrastive (default both)")
    e.add_argument("--baselines", default="logistic_regression,random_forest,gradient_boosting",
                   help="comma list (default logistic_regression,random_forest,gradient_boosting)")
    e.add_argument("--extras", default="",
                   help="comma list: rf_edge21 (random forest on our 21 transaction features), ours_rf_head "
                        "(random forest on those + our learned embeddings); default none")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=_evaluate)


def main(argv: list[str] | None = None) -> int:
    """Run ``fraud ...`` without the rest of graphsentry."""
    parser = argparse.ArgumentParser(prog="graphsentry")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    register_fraud(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        print(f"graphsentry fraud: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

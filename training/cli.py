"""The `graphsentry` command-line program.

Each package contributes its own subcommands through a ``register(subparsers)``
function in its ``cli`` module (``ingest.cli``, ``knowledge.cli``,
``detector.cli``, ``training.commands``). This module only assembles them; it
lives in ``training`` because that package is the most downstream one (it may
import all others, none imports it).
"""
from __future__ import annotations

import argparse
import logging
import sys

from detector import cli as detector_cli
from ingest import cli as ingest_cli
from knowledge import cli as knowledge_cli
from training import commands as training_commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="graphsentry",
        description="Streaming security detection on temporal graphs.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in (ingest_cli, knowledge_cli, detector_cli, training_commands):
        module.register(sub)
    from training import demo
    from training.fraud.cli import register_fraud

    register_fraud(sub)
    demo.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        rc = args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        # User errors (bad format, missing file, bad config) get a message, not a traceback.
        print(f"graphsentry {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())

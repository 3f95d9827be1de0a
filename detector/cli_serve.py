"""`graphsentry serve` and `graphsentry replay`: the live daemon and the Kafka replayer."""
from __future__ import annotations

import argparse


def register(subparsers: "argparse._SubParsersAction") -> None:
    """Add subcommands: serve, replay."""

"""Subcommands contributed by the `detector` package to the `graphsentry` program."""
from __future__ import annotations

import argparse

from detector import cli_score, cli_serve


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `score`, `serve` and `replay`."""
    cli_score.register(subparsers)
    cli_serve.register(subparsers)

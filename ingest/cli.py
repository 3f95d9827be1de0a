"""Subcommands contributed by the `ingest` package to the `graphsentry` program."""
from __future__ import annotations

import argparse

from ingest import cli_ingest, cli_windows


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `ingest` and `windows`."""
    cli_ingest.register(subparsers)
    cli_windows.register(subparsers)

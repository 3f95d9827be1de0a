"""Subcommands contributed by the `knowledge` package to the `graphsentry` program."""
from __future__ import annotations

import argparse


def register(subparsers: "argparse._SubParsersAction") -> None:
    """Add this package's subcommands to the `graphsentry` parser."""

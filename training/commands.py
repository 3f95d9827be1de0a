"""Subcommands contributed by the `training` package (train, evaluate)."""
from __future__ import annotations

import argparse


def register(subparsers: "argparse._SubParsersAction") -> None:
    """Add this package's subcommands to the `graphsentry` parser."""

"""`graphsentry ingest`: read inputs into the canonical schema."""
from __future__ import annotations

import argparse


def register(subparsers: "argparse._SubParsersAction") -> None:
    """Add subcommands: ingest."""

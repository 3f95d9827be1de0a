"""`graphsentry score`: score inputs with a trained model."""
from __future__ import annotations

import argparse


def register(subparsers: "argparse._SubParsersAction") -> None:
    """Add subcommands: score."""

"""`graphsentry windows`: cut inputs into event-time windows and graphs."""
from __future__ import annotations

import argparse


def register(subparsers: "argparse._SubParsersAction") -> None:
    """Add subcommands: windows."""

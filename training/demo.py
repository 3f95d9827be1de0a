"""`graphsentry demo`: the end-to-end job `make run` runs on the bundled samples."""
from __future__ import annotations

import argparse


def register(subparsers: "argparse._SubParsersAction") -> None:
    p = subparsers.add_parser("demo", help="run the main job end to end on the bundled sample data")
    p.add_argument("--out", default="out/demo", help="where the demo writes its outputs (default: out/demo)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print("graphsentry demo: nothing wired yet")
    return 0

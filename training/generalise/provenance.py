"""What a benchmark run records about itself: the commit, uncommitted files, library versions and torch
threads.
"""
from __future__ import annotations

import os
from pathlib import Path


def git_head() -> str | None:
    from training.evaluate import _git_head

    # a copy of the tree without .git (e.g. a remote machine) names its commit in GENERALISE_COMMIT
    return _git_head() or os.environ.get("GENERALISE_COMMIT") or None


def _dirty() -> list[str] | None:
    """Code files that differ from the commit (None outside a git checkout)."""
    import subprocess

    try:
        r = subprocess.run(["git", "status", "--porcelain", "--", "training", "detector", "ingest", "knowledge"],
                           capture_output=True, text=True, timeout=10, cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    if r.returncode != 0:
        return None
    return [ln[3:] for ln in r.stdout.splitlines() if ln[3:].endswith(".py")]


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for p in ("torch", "numpy", "scikit-learn", "pyarrow", "pyod"):
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            out[p] = None
    return out


def _torch_threads() -> int:
    from detector.runtime import default_threads

    return int(default_threads())

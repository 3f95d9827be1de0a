"""Provenance every report under ``reports/`` carries: the code's commit, the date, the machine's cores.

Writers (benchmarks, evaluations, the demo) merge :func:`report_meta` into the JSON they write, so
``python -m scripts.render_results`` can state where each figure comes from and its test can check that
the commit a report names exists in the history it is rendered into.
"""
from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]


def git_commit(repo: Path = _REPO) -> tuple[str | None, bool]:
    """(HEAD's full hash, whether tracked files differ from it); (None, False) outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                              cwd=repo).stdout.strip() or None
        if head is None:
            return None, False
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=30, cwd=repo).stdout.strip() != ""
        return head, dirty
    except (OSError, subprocess.SubprocessError):
        return None, False


def report_meta() -> dict:
    """``{"commit", "uncommitted_changes", "date", "cores"}`` for the code running now (date in UTC, ISO 8601)."""
    commit, dirty = git_commit()
    return {"commit": commit, "uncommitted_changes": dirty,
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "cores": os.cpu_count()}

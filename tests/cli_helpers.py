"""Running `graphsentry` in-process in a test: ``from cli_helpers import run_cli`` (tests/ is on ``sys.path``: its
conftest.py puts it there)."""
from __future__ import annotations


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``graphsentry argv`` in-process: (exit code, stdout, stderr). argparse's exits count as exit codes."""
    from training.cli import main

    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 2
    out, err = capsys.readouterr()
    return rc, out, err

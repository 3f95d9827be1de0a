import subprocess
import sys

from training.cli import build_parser


def test_every_subcommand_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert "demo" in sub.choices
    for name, p in sub.choices.items():
        text = p.format_help()
        assert name in text and len(text) > 40


def test_main_module_runs_help():
    out = subprocess.run([sys.executable, "-m", "training.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "graphsentry" in out.stdout

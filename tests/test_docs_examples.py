"""The examples in README.md and docs/ run as written from a fresh clone after `make run`.

A fenced block whose info string is ``bash example`` is an example: the module clones this checkout's
HEAD into a temp folder, runs `graphsentry demo` there (what `make run` runs, with a free metrics port),
then runs every example block with ``bash -e`` from the clone's root. ``graphsentry`` and
``.venv/bin/graphsentry`` in the clone run the clone's code with this interpreter. The demo's printed
figures must be exactly those README.md shows in its demo block (the demo is deterministic: same seed,
one torch thread; two runs print the same figures).
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

FENCE = re.compile(r"^```bash example\n(.*?)^```", re.M | re.S)


def examples(text: str) -> list[str]:
    return [m[1] for m in FENCE.finditer(text)]


def _documents(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> tuple[Path, dict]:
    """A clone of HEAD with a `graphsentry` launcher, after the demo ran in it; (root, env)."""
    if subprocess.run(["git", "rev-parse", "--git-dir"], cwd=REPO, capture_output=True).returncode != 0:
        pytest.skip("not a git checkout: nothing to clone")
    root = tmp_path_factory.mktemp("clone") / "graphsentry"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(REPO), str(root)], check=True, timeout=300)
    bindir = root / ".venv" / "bin"
    bindir.mkdir(parents=True)
    launcher = bindir / "graphsentry"
    launcher.write_text(f"#!/bin/sh\nexec {sys.executable} -c "
                        "'import sys; from training.cli import main; sys.argv[0] = \"graphsentry\"; sys.exit(main())' "
                        '"$@"\n')
    launcher.chmod(0o755)
    (bindir / "python").symlink_to(sys.executable)
    env = dict(os.environ, PYTHONPATH=str(root), PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}",
               GRAPHSENTRY_TORCH_THREADS="1")
    env.pop("GRAPHSENTRY_SHARED_DATA", None)
    demo = subprocess.run(["graphsentry", "demo", "--metrics-port", str(_free_port()), "--report",
                           "out/demo-report.json"], cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    (root / "out" / "demo.stdout").write_text(demo.stdout)
    return root, env


def test_documents_hold_examples():
    """The pages that teach a command carry runnable examples (so this module tests something)."""
    n = {p.relative_to(REPO).as_posix(): len(examples(p.read_text())) for p in _documents(REPO)}
    assert n["README.md"] >= 2 and sum(n.values()) >= 6, n


def test_demo_prints_the_figures_the_readme_shows(clone):
    root, _ = clone
    block = re.search(r"<!-- results:demo -->\n.*?```text\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert block, "README.md has no demo block"
    printed = (root / "out" / "demo.stdout").read_text().split("\n")
    for line in block[1].strip().split("\n"):
        assert line in printed, f"the demo no longer prints {line!r}: run `make run` then `make docs`"


def test_examples_run_as_written(clone):
    root, env = clone
    failed = []
    for doc in _documents(root):
        for i, code in enumerate(examples(doc.read_text())):
            res = subprocess.run(["bash", "-e", "-c", code], cwd=root, env=env, capture_output=True, text=True,
                                 timeout=600)
            if res.returncode != 0:
                failed.append(f"{doc.relative_to(root)} example {i + 1} (exit {res.returncode}):\n{code}\n"
                              f"{res.stderr[-1500:]}")
    shutil.rmtree(root / "out", ignore_errors=True)
    assert not failed, "\n\n".join(failed)

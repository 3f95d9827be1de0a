"""The figures in README.md and docs/ are rendered from reports/*.json and cannot drift from them.

`python -m scripts.render_results --check` must pass on the committed documents; editing a figure inside a
block by hand must make it fail; every report a block reads must name the commit that produced it, and that
commit must be in this checkout's history.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts import render_results  # noqa: E402
from scripts.render import BLOCKS  # noqa: E402
from scripts.render.common import Reports, commits, provenance  # noqa: E402


def _copy(tmp_path: Path) -> Path:
    """README.md, docs/ and reports/ of this checkout in a temp folder (render_results --root reads only these)."""
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy(REPO / "README.md", root / "README.md")
    shutil.copytree(REPO / "docs", root / "docs")
    shutil.copytree(REPO / "reports", root / "reports", ignore=shutil.ignore_patterns("*.parquet", "*.npz"))
    return root


def _check(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scripts.render_results", "--check", "--root", str(root)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def test_committed_documents_match_their_reports():
    stale = [f"{b.file}: {b.name}" for b in render_results.blocks(REPO) if b.current != b.rendered]
    assert not stale, f"blocks differ from their reports (run `make docs`): {stale}"


def test_every_renderer_is_used_and_every_block_names_its_source():
    found = render_results.blocks(REPO)
    assert {b.name for b in found} == set(BLOCKS), "a renderer no document uses, or a block with no renderer"
    for b in found:
        for rel in render_results.reports_of(b.name):
            assert f"Source: `{rel}`" in b.rendered, (b.name, rel)


def test_check_fails_when_a_figure_is_edited_by_hand(tmp_path):
    root = _copy(tmp_path)
    assert _check(root).returncode == 0
    readme = root / "README.md"
    text = readme.read_text()
    block = re.search(r"<!-- results:summary -->\n(.*?)<!-- /results:summary -->", text, re.S)
    assert block, "README.md has no summary block"
    figure = re.search(r"\d[\d,]*\.?\d*", block[1].split("\n", 2)[2])  # first figure below the table header
    edited = block[1].replace(figure[0], figure[0] + "1", 1)
    readme.write_text(text.replace(block[1], edited))
    res = _check(root)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "README.md: block 'summary' differs" in res.stdout


def test_check_fails_when_a_report_changes(tmp_path):
    root = _copy(tmp_path)
    demo = root / "reports" / "demo.json"
    rep = json.loads(demo.read_text())
    rep["alert_quality"]["attack_recall"] = round(1 - rep["alert_quality"]["attack_recall"], 3) or 0.5
    demo.write_text(json.dumps(rep))
    res = _check(root)
    assert res.returncode == 1 and "block 'demo' differs" in res.stdout, res.stdout + res.stderr


def test_render_rewrites_an_edited_block_back(tmp_path):
    root = _copy(tmp_path)
    page = root / "docs" / "benchmarks.md"
    original = page.read_text()
    page.write_text(re.sub(r"(<!-- results:serve_bench -->\n).*?(<!-- /results:serve_bench -->)",
                           r"\1| hand-typed | 1 |\n\2", original, flags=re.S))
    assert _check(root).returncode == 1
    assert render_results.main(["--root", str(root)]) == 0
    assert page.read_text() == original


def test_unknown_block_is_a_usage_error(tmp_path):
    root = _copy(tmp_path)
    (root / "docs" / "x.md").write_text("<!-- results:no_such_block -->\n<!-- /results:no_such_block -->\n")
    res = _check(root)
    assert res.returncode == 2 and "unknown results block 'no_such_block'" in res.stderr


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_reports_name_a_commit_date_and_cores_in_this_history(name):
    """Every report a block reads names its commit, date and cores; the commit is an ancestor of HEAD.

    A report whose commit is not in the history measured code this checkout does not have. (Reports written
    before the writers recorded their commit carry the commit that last wrote the file, said in `meta`.)
    """
    reports = Reports(REPO)
    for rel in render_results.reports_of(name):
        rep = reports.get(rel)
        p = provenance(rep)
        assert p["commit"] and re.fullmatch(r"[0-9a-f]{7,40}", p["commit"]), f"{rel} names no commit"
        assert p["date"], f"{rel} names no date"
        assert p["cores"] or "cores" in rep, f"{rel} names no core count"
        if _git("rev-parse", "--git-dir").returncode != 0:
            pytest.skip("not a git checkout: the commits cannot be checked against the history")
        for c in commits(rep):
            assert _git("cat-file", "-e", f"{c}^{{commit}}").returncode == 0, f"{rel}: commit {c} not in this repository"
            assert _git("merge-base", "--is-ancestor", c, "HEAD").returncode == 0, \
                f"{rel}: commit {c} is not in the history of HEAD"


def test_age_lists_every_report_a_block_reads():
    if _git("rev-parse", "--git-dir").returncode != 0:
        pytest.skip("not a git checkout")
    rows = render_results.age(REPO)
    used = {r for name in BLOCKS for r in render_results.reports_of(name)}
    assert {rel for rel, _, _ in rows} == used
    assert all(isinstance(n, int) and n >= 0 for _, _, n in rows), rows

"""README.md and docs/ say what is and how to use it: no project history, no paths a user does not have,
no links to pages or commands that do not exist."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

# "session" is history ("session 8", "this session") unless it is a network or Kafka term or an identifier.
TECHNICAL_SESSION = re.compile(r"(session[._]timeout|session timeout|consumer session|tcp sessions?|vpn session|"
                               r"pppoe session|ssh sessions?|http sessions?|session (cookie|token|id|key)s?|\w+_sessions?\b|sessions? per)", re.I)
HISTORY = [
    (re.compile(r"\bround \d+\b", re.I), "a work round"),
    (re.compile(r"\bsession[- ](\d+|start)\b|\b(this|that|previous|next|last) session\b", re.I), "a work session"),
    (re.compile(r"\bpreviously\b|\bno longer\b|\bthe lead\b", re.I), "a comparison with earlier code"),
]
DATED_RUN = re.compile(r"\b20\d\d-\d\d-\d\d\b.*\b(run|measured|session|rerun)\b|\b(run|measured|rerun)\b.*\b20\d\d-\d\d-\d\d\b",
                       re.I)


def _prose(text: str) -> list[tuple[int, str]]:
    """Lines outside fenced code and outside rendered results blocks, with their numbers."""
    out, fence, block = [], False, False
    for i, line in enumerate(text.split("\n"), 1):
        if line.lstrip().startswith("```"):
            fence = not fence
            continue
        if re.match(r"<!-- results:[\w-]+ -->", line):
            block = True
        elif re.match(r"<!-- /results:[\w-]+ -->", line):
            block = False
            continue
        if not fence and not block:
            out.append((i, line))
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_project_history(doc):
    found = []
    for i, line in enumerate(doc.read_text().split("\n"), 1):
        for m in re.finditer(r"session", line, re.I):
            ctx = line[max(0, m.start() - 12): m.end() + 10]
            if not TECHNICAL_SESSION.search(ctx):
                found.append(f"{i}: 'session' ({ctx.strip()})")
        for pat, what in HISTORY:
            if pat.search(line):
                found.append(f"{i}: {what}: {line.strip()[:100]}")
    for i, line in _prose(doc.read_text()):
        if DATED_RUN.search(line):
            found.append(f"{i}: a dated run log: {line.strip()[:100]}")
    assert not found, f"{doc.name} tells history (it belongs in git log):\n" + "\n".join(found)


def test_readme_has_no_paths_a_user_does_not_have():
    text = (REPO / "README.md").read_text()
    for bad in ("../shared/data", "shared/data", "models/current", "/work/"):
        assert bad not in text, f"README.md mentions {bad}: use samples/ and the paths the quick start creates"


def test_readme_is_an_entry():
    assert len((REPO / "README.md").read_text().split("\n")) <= 300


LINK = re.compile(r"\]\(([^)#\s]+)(#[^)]*)?\)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_point_at_files(doc):
    missing = []
    for m in LINK.finditer(doc.read_text()):
        target = m[1]
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        if not (doc.parent / target).exists():
            missing.append(target)
    assert not missing, f"{doc.name} links to missing files: {missing}"


SUBCOMMAND = re.compile(r"(?:^|[\s(/$])graphsentry\s+([a-z][a-z-]+)")


def _code(text: str) -> list[str]:
    """Fenced code lines and inline code spans: where a command is written to be run."""
    out, fence = [], False
    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            fence = not fence
        elif fence:
            out.append(line)
        else:
            out += re.findall(r"`([^`]+)`", line)
    return out


def _subcommands_mentioned() -> set[str]:
    subs = set()
    for doc in DOCS:
        for code in _code(doc.read_text()):
            subs.update(m[1] for m in SUBCOMMAND.finditer(" " + code))
    return subs


# Known gaps, each with where to fix it; the test fails once one is fixed, so the entry gets removed.
KNOWN_MISSING = {
    "formats": "docs/configuration.md is generated from detector/daemon/config.py, whose `source.format` "
               "description names `graphsentry formats`; fix the description there and regenerate",
}


def test_every_subcommand_in_the_docs_exists(capsys):
    """Each `graphsentry SUB` written in README.md or docs/ is a command the CLI has (`SUB --help` exits 0)."""
    sys.path.insert(0, str(REPO))
    from training.cli import main

    mentioned = _subcommands_mentioned()
    assert {"serve", "train", "demo"} <= mentioned
    unknown = []
    for sub in sorted(mentioned):
        try:
            rc = main([sub, "--help"])
        except SystemExit as e:
            rc = e.code
        if rc not in (0, None):
            unknown.append(sub)
    capsys.readouterr()
    assert not set(unknown) - set(KNOWN_MISSING), \
        f"README.md/docs mention graphsentry subcommands that do not exist: {sorted(set(unknown) - set(KNOWN_MISSING))}"
    fixed = set(KNOWN_MISSING) - set(unknown)
    assert not fixed, f"{sorted(fixed)} now exist or are no longer mentioned: remove them from KNOWN_MISSING"


REPO_PATH = re.compile(r"`((?:ingest|knowledge|detector|training|benchmarks|deploy|scripts|tests|samples)/[\w./-]+)`")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_repository_paths_named_exist(doc):
    """A module, test or file written as `pkg/path` is one the checkout has (docs follow the code's layout)."""
    missing = [m[1] for m in REPO_PATH.finditer(doc.read_text()) if not (REPO / m[1].rstrip("/")).exists()]
    assert not missing, f"{doc.name} names paths that do not exist: {sorted(set(missing))}"


IMPORT = re.compile(r"^\s*from ((?:ingest|knowledge|detector|training)[\w.]*) import ([\w, ]+?)\s*(?:#.*)?$", re.M)


def test_python_imports_in_the_docs_exist():
    """Every `from graphsentry_package import name` in a ```python block imports (the API the docs teach exists)."""
    import importlib

    missing = []
    for doc in DOCS:
        for block in re.findall(r"```python\n(.*?)```", doc.read_text(), re.S):
            for mod, names in IMPORT.findall(block):
                try:
                    m = importlib.import_module(mod)
                except ImportError as e:
                    missing.append(f"{doc.name}: {mod} ({e})")
                    continue
                missing += [f"{doc.name}: {mod}.{n.strip()}" for n in names.split(",") if not hasattr(m, n.strip())]
    assert not missing, missing


def test_every_docs_page_is_in_the_index():
    index = (REPO / "docs" / "README.md").read_text()
    missing = [p.name for p in DOCS[1:] if p.name != "README.md" and f"]({p.name})" not in index]
    assert not missing, f"docs/README.md does not list {missing}"

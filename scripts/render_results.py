"""Render the figures in README.md and docs/*.md from the JSON reports under reports/.

A block is ``<!-- results:NAME -->`` ... ``<!-- /results:NAME -->``; its content is replaced by what the
renderer NAME (scripts/render/) makes of the reports, followed by each report's file, commit and date.

    python -m scripts.render_results           # rewrite the blocks (what `make docs` runs)
    python -m scripts.render_results --check   # exit 1 listing the blocks that differ; nothing written
    python -m scripts.render_results --age     # per report: commits to the packages since the one it names

Exit codes: 0 done (or up to date), 1 blocks differ (``--check``), 2 a block or report is missing or broken.
"""
from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- results:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /results:(?P=name) -->)", re.S)
OPEN = re.compile(r"<!-- results:([\w-]+) -->")


@dataclass(frozen=True)
class Block:
    file: str          # relative to the repository root
    name: str
    current: str       # the text between the markers now
    rendered: str      # what the reports render


def documents(root: Path) -> list[Path]:
    """README.md and every markdown page under docs/."""
    return [p for p in [root / "README.md", *sorted((root / "docs").rglob("*.md"))] if p.is_file()]


def blocks(root: Path = REPO) -> list[Block]:
    """Every marked block in the documents with its rendering; ValueError for an unknown or unclosed block."""
    from scripts.render import BLOCKS, render_block
    from scripts.render.common import Reports

    reports = Reports(root)
    out = []
    for doc in documents(root):
        text = doc.read_text()
        rel = doc.relative_to(root).as_posix()
        found = list(BLOCK.finditer(text))
        if len(found) != len(OPEN.findall(text)):
            raise ValueError(f"{rel}: a `<!-- results:NAME -->` block has no matching `<!-- /results:NAME -->`")
        for m in found:
            name = m["name"]
            if name not in BLOCKS:
                raise ValueError(f"{rel}: unknown results block {name!r} (known: {', '.join(sorted(BLOCKS))})")
            out.append(Block(rel, name, m["body"], render_block(name, reports) + "\n"))
    return out


def reports_of(name: str, root: Path = REPO) -> list[str]:
    """The report files block ``name`` reads."""
    from scripts.render import BLOCKS
    from scripts.render.common import Reports

    reports = Reports(root)
    BLOCKS[name](reports)
    return list(dict.fromkeys(reports.used))


CODE = ("ingest", "knowledge", "detector", "training", "benchmarks")


def age(root: Path = REPO) -> list[tuple[str, str, int | None]]:
    """(report, commit it names, commits touching the packages since then; None when not in the history)."""
    import subprocess

    from scripts.render import BLOCKS
    from scripts.render.common import Reports, provenance

    out = []
    reports = Reports(root)
    for rel in dict.fromkeys(r for name in BLOCKS for r in reports_of(name, root)):
        commit = provenance(reports.get(rel))["commit"] or ""
        log = subprocess.run(["git", "rev-list", "--count", f"{commit}..HEAD", "--", *CODE], cwd=root,
                             capture_output=True, text=True, timeout=60)
        out.append((rel, commit[:10], int(log.stdout) if log.returncode == 0 and commit else None))
    return out


def write(root: Path = REPO) -> list[Block]:
    """Rewrite every block that differs; returns those blocks."""
    changed = [b for b in blocks(root) if b.current != b.rendered]
    for rel in dict.fromkeys(b.file for b in changed):
        path = root / rel
        mine = {b.name: b.rendered for b in changed if b.file == rel}
        path.write_text(BLOCK.sub(lambda m: m[1] + mine.get(m["name"], m["body"]) + m[4], path.read_text()))
    return changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scripts.render_results", description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 listing the blocks that differ; write nothing")
    ap.add_argument("--age", action="store_true",
                    help="list each report's commit and how many commits changed the packages since; write nothing")
    ap.add_argument("--root", type=Path, default=REPO, help="repository checkout to render (default: this one)")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    try:
        if a.age:
            for rel, commit, n in age(a.root):
                print(f"{rel}: commit {commit or 'none'}, " +
                      ("not in this history" if n is None else f"{n} commit(s) to {', '.join(CODE)} since"))
            return 0
        if a.check:
            stale = [b for b in blocks(a.root) if b.current != b.rendered]
            for b in stale:
                print(f"{b.file}: block {b.name!r} differs from what the reports render")
            if stale:
                print("run `make docs` (python -m scripts.render_results) and commit the result", file=sys.stderr)
            return 1 if stale else 0
        changed = write(a.root)
        print(f"{len(changed)} block(s) rewritten" + "".join(f"\n  {b.file}: {b.name}" for b in changed))
        return 0
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"render_results: {type(e).__name__}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

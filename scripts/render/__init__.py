"""Renderers of the ``<!-- results:NAME -->`` blocks in README.md and docs/: one function per block.

Each renderer reads its reports through a :class:`~scripts.render.common.Reports` (which records the files
it used) and returns markdown lines; :func:`render_block` adds the source line (file, commit, date, cores)
of every report the block read, so no block can show a figure without saying where it comes from.
"""
from __future__ import annotations

from collections.abc import Callable

from scripts.render import bench, demo, fraud, knowledge, model, summary
from scripts.render.common import Reports, source_lines

BLOCKS: dict[str, Callable[[Reports], list[str]]] = {
    "demo": demo.render,
    "summary": summary.render,
    "generalise": model.render_generalise,
    "score_bench": bench.render_score,
    "serve_bench": bench.render_serve,
    "json_decode": bench.render_decode,
    "window_bench": bench.render_window,
    "serve_file_bench": bench.render_serve_file,
    "train_bench": bench.render_train,
    "knowledge_techniques": knowledge.render_techniques,
    "knowledge_throughput": knowledge.render_throughput,
    "fraud": fraud.render,
}


def render_block(name: str, reports: Reports) -> str:
    """The block's content (between its markers): the rendered figures, then their sources."""
    used_before = len(reports.used)
    body = BLOCKS[name](reports)
    used = list(dict.fromkeys(reports.used[used_before:]))
    return "\n".join(body + [""] + source_lines(reports, used))

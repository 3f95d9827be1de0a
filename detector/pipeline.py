"""Window -> graph -> knowledge block: the one feature path shared by training and scoring."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from detector.tensors import cat_rows
from ingest.features import FlowPreprocessor
from ingest.graph import GraphBuilder, NodeIdMap

log = logging.getLogger(__name__)


IMPL = "ingest"  # the one feature implementation (ingest.features, ingest.graph); model configs record it


def _check_impl(impl: str) -> None:
    if impl != IMPL:
        raise ValueError(f"pipeline impl {impl!r} is not supported (only {IMPL!r})")


def preprocessor_class(impl: str = IMPL) -> type[FlowPreprocessor]:
    """The flow preprocessor class of a model whose pipeline config names ``impl``."""
    _check_impl(impl)
    return FlowPreprocessor


def load_featurizer(enabled: bool = True):
    """The bundled knowledge featurizer, or ``None`` when disabled or not available."""
    if not enabled:
        return None
    try:
        from knowledge.features import KnowledgeFeaturizer

        return KnowledgeFeaturizer.default()
    except Exception as exc:  # knowledge package missing or its artifact broken: run without it, say so
        log.warning("knowledge features unavailable (%s); continuing without them", exc)
        return None


@dataclass
class PipelineConfig:
    impl: str = IMPL
    node_mode: str = "ip"
    knowledge: bool = True
    id_capacity: int = 1_000_000

    def __post_init__(self) -> None:
        _check_impl(self.impl)


def window_groups(windows, max_records: int = 65536):
    """Consecutive runs of ``windows`` holding at most ``max_records`` records each (a larger single
    window is a group alone): the unit of one batched ``build_many`` / scoring call, bounding its memory.
    Lazy: ``windows`` may be any iterable; a group is yielded once the window after it is known."""
    group: list = []
    n = 0
    for w in windows:
        rows = w.table.num_rows
        if group and n + rows > max_records:
            yield group
            group, n = [], 0
        group.append(w)
        n += rows
    if group:
        yield group


class GraphStream:
    """Stateful per-stream builder (NodeIdMap and previous-flow times live here)."""

    def __init__(self, pre, cfg: PipelineConfig, featurizer) -> None:
        self.ids = NodeIdMap(capacity=cfg.id_capacity)
        self.builder = GraphBuilder(node_mode=cfg.node_mode, preprocessor=pre, id_map=self.ids)
        self.kf = featurizer
        self.knowledge_errors = 0

    def build(self, window):
        """Return ``(data, kb)``: ``data.edge_attr``/``data.x`` already include the knowledge block."""
        return self._attach_kb(window, self.builder.build(window))

    def build_all(self, windows, max_records: int = 65536) -> list:
        """:meth:`build_many` over any number of windows, in groups of at most ``max_records`` records."""
        return [r for group in window_groups(windows, max_records) for r in self.build_many(group)]

    def build_many(self, windows, factored_kb: bool = False) -> list:
        """``[(data, kb), ...]`` for consecutive windows, in order; same result as :meth:`build` on each.

        The graphs are built in one ``GraphBuilder.build_many`` call and the knowledge blocks in one
        ``KnowledgeFeaturizer.transform_many`` call (per-window group keys, so each block is the one
        of its window alone): the per-call overhead is paid once instead of once per window.

        ``factored_kb=True``: the edge knowledge block is not appended to ``data.edge_attr`` but given
        as ``data.edge_kb = (rows [R, K], index [E])`` with rows shared by the group (most flows repeat
        another flow's block; ``detector.models.stgnn.full_edge_attr`` gives the joined form). The
        encoder then projects each distinct row once (batch scoring); nothing [E, K]-sized is built.
        """
        windows = list(windows)
        if not windows:
            return []
        many = getattr(self.builder, "build_many", None)
        graphs = many(windows) if many is not None else [self.builder.build(w) for w in windows]
        kbs = self._kb_many(windows, graphs) if self.kf is not None and len(windows) > 1 else None
        if kbs is None:
            return [self._attach_kb(w, d) for w, d in zip(windows, graphs)]
        try:
            return self._attach_many(graphs, kbs, factored_kb)
        except Exception as exc:  # noqa: BLE001 - window by window below (its errors counted there)
            log.debug("stacked knowledge blocks failed (%s); one window at a time", exc)
        return [self._attach_kb(w, d, kb) for w, d, kb in zip(windows, graphs, kbs)]

    @staticmethod
    def _attach_many(graphs, kbs, factored_kb: bool = False) -> list:
        """:meth:`_attach_kb` on every window at once: the group's inputs and knowledge blocks are
        written side by side into one tensor each (the blocks gathered straight into it), and each
        graph gets its rows as a view. Same values as window by window; a window's ``cat`` and
        gathers cost more than its rows on small windows, and whole-group temporaries cost copies.
        ``factored_kb``: edges get ``edge_kb = (shared rows, index view)`` instead (see :meth:`build_many`)."""
        from knowledge.features import shared_edge_rows, stack_edges, stack_nodes

        def joined(parts, stack):
            return _joined(cat_rows([p.float() for p in parts]), len(kbs[0].names), partial(stack, kbs))

        shared = shared_edge_rows(kbs) if factored_kb else None
        if shared is not None and shared[0].dtype == np.float32:
            rows, index = torch.from_numpy(shared[0]), torch.from_numpy(shared[1])
            edge = cat_rows([d.edge_attr.float() for d in graphs])  # [E, F]: flow features only
        else:
            shared, edge = None, joined([d.edge_attr for d in graphs], stack_edges)
        node = joined([d.x for d in graphs], stack_nodes)
        e0 = n0 = 0
        for d in graphs:
            e1, n1 = e0 + d.edge_attr.size(0), n0 + d.x.size(0)
            d.edge_attr, d.x = edge[e0:e1], node[n0:n1]
            if shared is not None:
                d.edge_kb = (rows, index[e0:e1])
            e0, n0 = e1, n1
        return list(zip(graphs, kbs))

    def _kb_many(self, windows, graphs) -> list | None:
        """Knowledge blocks of all windows in one call (node blocks included), or None when that
        fails: then each window is featurized alone, so one bad window cannot zero the others."""
        many = getattr(self.kf, "transform_many", None)
        if many is None:
            return None
        try:
            kbs = many([w.table for w in windows], [d.edge_index.numpy() for d in graphs],
                       [int(d.num_nodes) for d in graphs])
            for kb in kbs:
                _ = kb.node  # node blocks are computed together on first access: fail here, not later
            return kbs
        except Exception as exc:  # noqa: BLE001 - retried window by window
            log.debug("batched knowledge features failed (%s); one window at a time", exc)
            return None

    def _attach_kb(self, window, data, kb=None):
        if self.kf is not None:
            try:
                if kb is None:
                    kb = self.kf.transform(window.table, data.edge_index.numpy(), int(data.num_nodes))
                from knowledge.features import stack_edges, stack_nodes

                # the block written into the inputs (kb.edge stays unbuilt: readers use the shared rows)
                edge_attr = _joined(data.edge_attr, len(kb.names), partial(stack_edges, [kb]))
                x = _joined(data.x, len(kb.names), partial(stack_nodes, [kb]))
            except Exception as exc:  # never lose the window because of the knowledge block
                self.knowledge_errors += 1
                if self.knowledge_errors <= 3:
                    log.warning("knowledge features failed on a window (%s); zeros used (%d so far)", exc,
                                self.knowledge_errors)
                k = len(self.kf.names) if hasattr(self.kf, "names") else 0
                data.edge_attr = torch.cat([data.edge_attr, torch.zeros(data.edge_attr.size(0), k)], 1)
                data.x = torch.cat([data.x, torch.zeros(data.x.size(0), k)], 1)
                return data, None
            data.edge_attr, data.x = edge_attr, x
        return data, kb


def _joined(inputs: torch.Tensor, width: int, fill) -> torch.Tensor:
    """``torch.cat([inputs.float(), block], 1)`` for a ``width``-column knowledge block that ``fill(out)``
    writes straight into the result's last columns (``out``: a NumPy view), e.g. gathered from the rows
    a ``transform_many`` call shares: no block-sized temporary, same values."""
    inputs = inputs.float()
    # allocated by NumPy, which asks for transparent huge pages on large arrays: the ~64 MB of a 50,000-flow
    # window is then faulted in ~3x faster than torch.empty's 4 KB pages (measured, THP "madvise")
    out = np.empty((inputs.size(0), inputs.size(1) + width), dtype=np.float32)
    out[:, :inputs.size(1)] = inputs.detach().numpy()
    fill(out[:, inputs.size(1):])
    return torch.from_numpy(out)


class FeaturePipeline:
    """Preprocessor + graph settings + knowledge featurizer; ``stream()`` gives fresh per-stream state."""

    def __init__(self, pre, cfg: PipelineConfig, featurizer=None) -> None:
        self.pre, self.cfg, self.kf = pre, cfg, featurizer

    @property
    def kg_version(self) -> str | None:
        return getattr(self.kf, "version", None) if self.kf is not None else None

    @property
    def kg_hash(self) -> str | None:
        return getattr(self.kf, "hash", None) if self.kf is not None else None

    def stream(self) -> GraphStream:
        return GraphStream(self.pre, self.cfg, self.kf)

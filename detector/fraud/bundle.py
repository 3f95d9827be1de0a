"""FraudBundle: a trained transaction model on disk, and its streaming scorer.

``MODEL_DIR``: ``config.json`` (kind, model config, threshold, window, label delay), ``weights.pt``
(state_dict, loaded with ``weights_only=True``), ``builder_state.npz`` (optional history, loaded with
``allow_pickle=False``) and ``manifest.json`` (:mod:`detector.model_files`, checked before anything is read).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detector.fraud.model import FraudModel, FraudModelConfig, config_dict
from detector.model_files import ModelDirError, remove_manifest, verify_manifest, write_manifest
from ingest.fraud.graph import DAY, HeteroGraphBuilder, ts_seconds

log = logging.getLogger(__name__)

WEIGHTS = "weights.pt"
CONFIG = "config.json"
STATE = "builder_state.npz"


_RETRAIN = "retrain the model (graphsentry train --kind transactions --out DIR)"


@dataclass
class FraudWindowScores:
    """Same fields as the flow ``WindowScores`` (CONTRACTS.md) plus ``reasons``."""

    rows: np.ndarray                       # int64 [E]
    scores: np.ndarray                     # float64 [E], fraud probability
    alerts: np.ndarray                     # bool [E], scores >= threshold
    top_technique: list                    # always None for transactions (no ATT&CK mapping)
    node_scores: np.ndarray                # float64 [N]: max score of each customer's transactions
    node_key: list[str]                    # customer ids, aligned with node_scores
    reasons: list = field(default_factory=list)


@dataclass
class FraudBundle:
    """Weights + config (+ threshold, label delay, window) + optional builder state."""

    model: FraudModel
    config: dict[str, Any]
    builder_state: dict[str, Any] | None = None

    kind = "transactions"  # what this bundle scores (flow ModelBundle: "flows")

    @property
    def threshold(self) -> float:
        return float(self.config["threshold"])

    def save(self, model_dir: str | os.PathLike) -> Path:
        """Write the bundle (a bundle already there is replaced); ``config.json`` last, atomically,
        after ``manifest.json`` (:mod:`detector.model_files`)."""
        d = Path(model_dir)
        d.mkdir(parents=True, exist_ok=True)
        remove_manifest(d)  # until the new manifest is written, the directory is refused
        torch.save(self.model.state_dict(), d / WEIGHTS)
        cfg = dict(self.config)
        cfg["kind"] = "transactions"
        cfg["model"] = config_dict(self.model.cfg)
        if self.builder_state is not None:
            st = dict(self.builder_state)
            keys = {"cust_keys": np.array(st.pop("cust_keys"), dtype=object).astype(str),
                    "term_keys": np.array(st.pop("term_keys"), dtype=object).astype(str)}
            np.savez_compressed(d / STATE, **{k: np.asarray(v) for k, v in st.items()}, **keys)
        else:
            (d / STATE).unlink(missing_ok=True)  # a replaced bundle's history is not this one's
        data = json.dumps(cfg, indent=2, sort_keys=True, default=float).encode()
        write_manifest(d, pending={CONFIG: data})
        tmp = d / (CONFIG + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(d / CONFIG)
        return d

    @classmethod
    def load(cls, model_dir: str | os.PathLike) -> FraudBundle:
        """The bundle saved in ``model_dir``, checked against its manifest before anything is read;
        :class:`~detector.model_files.ModelDirError` naming the file that is wrong."""
        d = Path(model_dir)
        if not (d / CONFIG).is_file():
            raise FileNotFoundError(f"{d} is not a model directory (no config.json)")
        verify_manifest(d)
        try:
            cfg = json.loads((d / CONFIG).read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise ModelDirError(f"{d / CONFIG} is not JSON ({exc}): {_RETRAIN}") from None
        if not isinstance(cfg, dict) or cfg.get("kind") != "transactions":
            kind = cfg.get("kind") if isinstance(cfg, dict) else None
            raise ValueError(f"{d}: config.json kind={kind!r}, expected 'transactions'")
        try:
            model = FraudModel(FraudModelConfig(**cfg["model"]))
            float(cfg["threshold"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelDirError(f"{d / CONFIG} is not a transaction model's config ({type(exc).__name__}: "
                                f"{exc}): {_RETRAIN}") from None
        try:
            weights = torch.load(d / WEIGHTS, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - truncated, not a torch file, a refused object: all "broken"
            raise ModelDirError(f"{d / WEIGHTS} is not a readable weights file ({type(exc).__name__}): "
                                f"{_RETRAIN}") from None
        try:
            model.load_state_dict(weights)
        except (RuntimeError, TypeError, AttributeError) as exc:
            lines = str(exc).strip().splitlines()
            raise ModelDirError(f"{d / WEIGHTS} does not fit the model in config.json "
                                f"({' '.join(x.strip() for x in lines[1:3]) or lines[:1]}): {_RETRAIN}") from None
        model.eval()
        state = None
        if (d / STATE).exists():
            try:
                with np.load(d / STATE, allow_pickle=False) as z:
                    state = {k: z[k] for k in z.files}
                state["cust_keys"] = [str(k) for k in state["cust_keys"]]
                state["term_keys"] = [str(k) for k in state["term_keys"]]
                state["label_delay_s"] = float(state["label_delay_s"])
                state["watermark"] = float(state["watermark"])
            except Exception as exc:  # noqa: BLE001 - truncated zip, missing keys, object arrays: all "broken"
                raise ModelDirError(f"{d / STATE} is not a readable builder state ({type(exc).__name__}: {exc}): "
                                    f"{_RETRAIN}") from None
        return cls(model=model, config=cfg, builder_state=state)

    def stream_scorer(self, *, use_labels: bool = True, resume_state: bool | str = "auto") -> FraudStreamScorer:
        """Scorer that keeps node history across windows.

        ``use_labels``: labels present in the stream are used as fraud feedback, but
        only after the label delay (never earlier). ``resume_state``: start from the
        history saved at the end of training (``"auto"``: only if the first window
        comes after it; a stream that starts earlier starts from empty history).
        """
        return FraudStreamScorer(self, use_labels=use_labels, resume_state=resume_state)


class FraudStreamScorer:
    """``score_window(window) -> FraudWindowScores``; holds the builder state."""

    def __init__(self, bundle: FraudBundle, use_labels: bool = True, resume_state: bool | str = "auto") -> None:
        self.bundle = bundle
        self.model = bundle.model.eval()
        self.builder = HeteroGraphBuilder(label_delay_s=float(bundle.config.get("label_delay_s", 7 * DAY)),
                                          use_labels=use_labels)
        self.resume_state = resume_state
        self._started = False

    def _maybe_resume(self, first_ts: float) -> None:
        st = self.bundle.builder_state
        if st is None or self.resume_state is False:
            return
        if self.resume_state == "auto" and first_ts < float(st["watermark"]):
            log.info("stream starts before the saved history ends: starting from empty history")
            return
        self.builder.load_state_dict(st)

    @torch.no_grad()
    def score_window(self, window: Any) -> FraudWindowScores:
        table = window.table if hasattr(window, "table") else window
        n = table.num_rows
        if n == 0:
            return FraudWindowScores(np.zeros(0, np.int64), np.zeros(0), np.zeros(0, bool), [], np.zeros(0), [], [])
        if not self._started:
            self._maybe_resume(float(ts_seconds(table).min()))
            self._started = True
        data = self.builder.build(window)
        logits, _, _, _ = self.model(data)
        scores = torch.sigmoid(logits).double().numpy()
        st = data["customer", "pays", "terminal"]
        src = st.edge_index[0].numpy()
        node_scores = np.zeros(data["customer"].num_nodes)
        np.maximum.at(node_scores, src, scores)
        return FraudWindowScores(
            rows=st.edge_row.numpy(), scores=scores, alerts=scores >= self.bundle.threshold,
            top_technique=[None] * n, node_scores=node_scores, node_key=list(data["customer"].node_key),
            reasons=[None] * n,
        )

"""``MODEL_DIR``: everything needed to score, loadable in one call.

Layout::

    MODEL_DIR/
      config.json        kind, model/pipeline/window config, detector name, calibration (threshold),
                         knowledge-graph version+hash, training-data fingerprint, training metrics
      weights.pt         STGNN state_dict (node memory is not saved: scoring starts from an empty state)
      preprocessor.json  fitted FlowPreprocessor
      detector.pkl       fitted detector (pickle: only load model directories you trust)
"""
from __future__ import annotations

import json
import logging
import pickle
import time
from pathlib import Path

import numpy as np
import torch

from detector.calibration import Calibration
from detector.models import STGNN, ModelConfig
from detector.pipeline import FeaturePipeline, PipelineConfig, load_featurizer, preprocessor_class

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


def _warm_up_flows():
    """Four plain TCP flows in FLOW_SCHEMA (two per warm-up window)."""
    import pyarrow as pa

    from ingest.schema import FLOW_SCHEMA, conform

    rows = [dict(row=i, ts=int((10 + 60 * (i // 2) + i) * 1e6), duration=1.0, src_ip=f"10.0.0.{i + 1}", src_port=40000 + i,
                 dst_ip="10.0.0.100", dst_port=80, proto="tcp", conn_state="SF", src_bytes=500, dst_bytes=5000,
                 src_pkts=6, dst_pkts=7) for i in range(4)]
    t = pa.Table.from_pylist(rows)
    t = t.set_column(t.schema.get_field_index("ts"), "ts", t.column("ts").cast(pa.timestamp("us", tz="UTC")))
    return conform(t, FLOW_SCHEMA)


class ModelBundle:
    """A trained flow model: encoder + detector + calibrated threshold + feature pipeline."""

    kind = "flows"

    def __init__(self, model: STGNN, detector, calibration: Calibration, pipeline: FeaturePipeline,
                 window: dict | None = None, detector_name: str = "knn", fingerprint: dict | None = None,
                 metrics: dict | None = None, extra: dict | None = None) -> None:
        self.model = model.eval()
        self.detector = detector
        self.calibration = calibration
        self.pipeline = pipeline
        self.window = window or {"size": 60.0, "lateness": 10.0}
        self.detector_name = detector_name
        self.fingerprint = fingerprint or {}
        self.metrics = metrics or {}
        self.extra = extra or {}
        self.path: Path | None = None

    @property
    def threshold(self) -> float:
        return float(self.calibration.threshold)

    @property
    def config(self) -> dict:
        return {
            "kind": self.kind,
            "format_version": FORMAT_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "model": self.model.config.to_dict(),
            "pipeline": vars(self.pipeline.cfg),
            "window": self.window,
            "detector": self.detector_name,
            "calibration": self.calibration.to_dict(),
            "threshold": self.threshold,
            "kg": {"version": self.pipeline.kg_version, "hash": self.pipeline.kg_hash,
                   "width": len(getattr(self.pipeline.kf, "names", None) or [])},
            "fingerprint": self.fingerprint,
            "metrics": self.metrics,
            **self.extra,
        }

    def warm_up(self) -> None:
        """Pay the one-time costs of scoring now instead of in the first window: numba's load of the
        compiled kernels (tree walk ~0.2 s, knowledge propagation ~0.5 s per process), the forest
        layout, the first torch calls. Scores two tiny synthetic windows with a throwaway scorer (its
        own state: nothing carries over). ``graphsentry score`` runs it in a thread while it reads
        the inputs; the daemon at model load. Never raises: a real problem shows when scoring."""
        try:
            from ingest.windows import Window

            t = _warm_up_flows()
            self.stream_scorer().score_windows([Window(0.0, 60.0, t.slice(0, 2)), Window(60.0, 120.0, t.slice(2))],
                                               return_exceptions=True)
        except Exception as exc:  # noqa: BLE001 - only an optimisation
            log.debug("warm-up failed: %r", exc)

    def stream_scorer(self):
        """A scorer with its own temporal state (one per stream / consumer)."""
        from detector.scoring import StreamScorer

        return StreamScorer(self)

    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / "config.json.tmp"
        torch.save(self.model.state_dict(), d / "weights.pt")
        self.pipeline.pre.save(str(d / "preprocessor.json"))
        with open(d / "detector.pkl", "wb") as f:
            pickle.dump(self.detector, f)
        # config.json last and atomically: a directory with config.json is complete.
        tmp.write_text(json.dumps(self.config, indent=2, default=str))
        tmp.replace(d / "config.json")
        self.path = d
        return d

    @classmethod
    def load(cls, directory: str | Path) -> "ModelBundle":
        d = Path(directory)
        cfg_path = d / "config.json"
        if not cfg_path.is_file():
            raise FileNotFoundError(f"{d} is not a model directory (no config.json)")
        cfg = json.loads(cfg_path.read_text())
        if cfg.get("kind", "flows") != "flows":
            raise ValueError(f"{d} holds a {cfg.get('kind')!r} model; use detector.bundle.load_bundle()")
        pcfg = PipelineConfig(**cfg["pipeline"])
        pre = preprocessor_class(pcfg.impl).load(str(d / "preprocessor.json"))
        kf = load_featurizer(pcfg.knowledge)
        if pcfg.knowledge and kf is None:
            raise ValueError(f"{d} was trained with knowledge features but knowledge.features is not available")
        want = (cfg.get("kg") or {}).get("hash")
        if kf is not None and want and getattr(kf, "hash", None) != want:
            log.warning("knowledge graph hash %s differs from the one the model was trained with (%s)",
                        getattr(kf, "hash", None), want)
        # A model is tied to the width of the knowledge block it was trained with: a rebuilt artifact
        # with other columns must fail here, clearly, not on every window later.
        want_w = (cfg.get("kg") or {}).get("width")
        have_w = len(getattr(kf, "names", None) or []) if kf is not None else 0
        if want_w is not None and pcfg.knowledge and want_w != have_w:
            raise ValueError(f"{d} was trained with {want_w} knowledge feature columns, the installed knowledge "
                             f"artifact gives {have_w}: retrain the model (graphsentry train) for this artifact")
        model = STGNN(ModelConfig(**cfg["model"]))
        model.load_state_dict(torch.load(d / "weights.pt", map_location="cpu", weights_only=True))
        with open(d / "detector.pkl", "rb") as f:
            det = pickle.load(f)
        known = {"kind", "format_version", "created", "model", "pipeline", "window", "detector", "calibration",
                 "threshold", "kg", "fingerprint", "metrics"}
        b = cls(model, det, Calibration(**cfg["calibration"]), FeaturePipeline(pre, pcfg, kf),
                window=cfg.get("window"), detector_name=cfg.get("detector", "knn"),
                fingerprint=cfg.get("fingerprint"), metrics=cfg.get("metrics"),
                extra={k: v for k, v in cfg.items() if k not in known})
        b.path = d
        return b


def load_bundle(directory: str | Path):
    """Load any model directory: flows -> :class:`ModelBundle`, transactions -> ``FraudBundle``."""
    d = Path(directory)
    cfg_path = d / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{d} is not a model directory (no config.json)")
    kind = json.loads(cfg_path.read_text()).get("kind", "flows")
    if kind == "transactions":
        from detector.fraud.bundle import FraudBundle

        return FraudBundle.load(d)
    return ModelBundle.load(d)

"""``MODEL_DIR``: everything needed to score, loadable in one call.

Layout (docs/model-directory.md)::

    MODEL_DIR/
      config.json        kind, model/pipeline/window config, detector name and state (parameters,
                         scalar fitted attributes), calibration (threshold), knowledge-graph
                         version+hash, training-data fingerprint, training metrics
      weights.pt         STGNN state_dict (node memory is not saved: scoring starts from an empty state)
      preprocessor.json  fitted FlowPreprocessor
      detector.npz       the detector's fitted arrays (np.savez; loaded with allow_pickle=False)
      technique.json     optional: the technique channel (detector.technique_detector; JSON, bounds as
                         lists); absent in older bundles and with ``TrainConfig(technique=False)``: channel off
      manifest.json      size + sha256 of each file (detector.model_files), checked before anything is read

Nothing loaded runs code: JSON, ``np.load(allow_pickle=False)``, ``torch.load(weights_only=True)``. A
directory that cannot score fails at load with a :class:`~detector.model_files.ModelDirError` naming the
file and the fix: a manifest mismatch, a config.json that is not one, weights that do not fit the
model config, detector arrays that do not describe a detector of the model's output width.
"""
from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from detector.calibration import Calibration
from detector.detectors import DETECTORS
from detector.model_files import ModelDirError, remove_manifest, verify_manifest, write_manifest
from detector.models import STGNN, ModelConfig
from detector.pipeline import FeaturePipeline, PipelineConfig, load_featurizer, preprocessor_class

log = logging.getLogger(__name__)
FORMAT_VERSION = 2  # 2: detector.npz + detector_state, manifest.json (1: a pickled detector)


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
                 metrics: dict | None = None, extra: dict | None = None, technique=None) -> None:
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
        # the technique channel (detector.technique_detector.TechniqueDetector) fused into the scores by
        # detector.scoring; None: off (an older bundle, or trained with TrainConfig.technique=False)
        self.technique = technique

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
        """Write the bundle to ``directory`` (created if needed; a bundle already there is replaced).
        ``config.json`` comes last, atomically, after ``manifest.json`` (:mod:`detector.model_files`)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        remove_manifest(d)  # until the new manifest is written, the directory is refused
        (d / "detector.pkl").unlink(missing_ok=True)  # an older bundle's pickled detector: replaced
        params, arrays = self.detector.state()
        torch.save(self.model.state_dict(), d / "weights.pt")
        self.pipeline.pre.save(str(d / "preprocessor.json"))
        with open(d / "detector.npz", "wb") as f:
            np.savez(f, **arrays)
        if self.technique is not None:
            (d / TECHNIQUE_FILE).write_text(json.dumps(self.technique.to_json()))
        else:
            (d / TECHNIQUE_FILE).unlink(missing_ok=True)
        cfg = self.config
        cfg["detector_state"] = {"class": self.detector.name, "params": params}
        data = json.dumps(cfg, indent=2, default=str).encode()
        write_manifest(d, pending={"config.json": data})
        tmp = d / "config.json.tmp"
        tmp.write_bytes(data)
        tmp.replace(d / "config.json")
        self.path = d
        return d

    @classmethod
    def load(cls, directory: str | Path) -> ModelBundle:
        """The bundle saved in ``directory``, checked against its manifest before anything is read and
        checked to score (the detector answers a probe of the model's output width). FileNotFoundError
        without config.json; :class:`~detector.model_files.ModelDirError` naming the file that is wrong."""
        d = Path(directory)
        if not (d / "config.json").is_file():
            raise FileNotFoundError(f"{d} is not a model directory (no config.json)")
        verify_manifest(d)
        cfg = _read_config(d)
        if cfg.get("kind", "flows") != "flows":
            raise ValueError(f"{d} holds a {cfg.get('kind')!r} model; use detector.bundle.load_bundle()")
        if cfg.get("format_version") != FORMAT_VERSION:
            raise ModelDirError(f"{d / 'config.json'} has format_version {cfg.get('format_version')!r}, this "
                                f"graphsentry reads {FORMAT_VERSION}: {_RETRAIN}")
        try:
            pcfg = PipelineConfig(**cfg["pipeline"])
            mcfg = ModelConfig(**cfg["model"])
            calibration = Calibration(**cfg["calibration"])
            det_state = cfg["detector_state"]
            det_cls = DETECTORS[det_state["class"]]
            det_params = det_state["params"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelDirError(f"{d / 'config.json'} is not a flow model's config ({type(exc).__name__}: "
                                f"{exc}): {_RETRAIN}") from None
        try:
            pre = preprocessor_class(pcfg.impl).load(str(d / "preprocessor.json"))
        except (KeyError, TypeError, ValueError, OSError) as exc:
            raise ModelDirError(f"{d / 'preprocessor.json'} cannot be read ({type(exc).__name__}: {exc}): "
                                f"{_RETRAIN}") from None
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
        model = _load_weights(d, mcfg)
        det = _load_detector(d, det_cls, det_params, model.edge_emb_dim)
        known = {"kind", "format_version", "created", "model", "pipeline", "window", "detector", "detector_state",
                 "calibration", "threshold", "kg", "fingerprint", "metrics"}
        b = cls(model, det, calibration, FeaturePipeline(pre, pcfg, kf),
                window=cfg.get("window"), detector_name=cfg.get("detector", "knn"),
                fingerprint=cfg.get("fingerprint"), metrics=cfg.get("metrics"),
                extra={k: v for k, v in cfg.items() if k not in known})
        b.technique = _load_technique(d, pcfg, kf)
        b.path = d
        return b


TECHNIQUE_FILE = "technique.json"
_RETRAIN = "retrain the model (graphsentry train --out DIR)"


def _read_config(d: Path) -> dict:
    """config.json as a dict; ModelDirError when it is not a JSON object."""
    try:
        cfg = json.loads((d / "config.json").read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelDirError(f"{d / 'config.json'} is not JSON ({exc}): {_RETRAIN}") from None
    if not isinstance(cfg, dict):
        raise ModelDirError(f"{d / 'config.json'} is not a JSON object: {_RETRAIN}")
    return cfg


def _load_weights(d: Path, mcfg: ModelConfig) -> STGNN:
    """The STGNN of ``mcfg`` with the weights of ``weights.pt`` (tensors only: ``weights_only=True``)."""
    path = d / "weights.pt"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated zip, not a torch file, a refused object: all "broken"
        raise ModelDirError(f"{path} is not a readable weights file ({type(exc).__name__}): {_RETRAIN}") from None
    model = STGNN(mcfg)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(x.strip() for x in first[1:3]) if len(first) > 1 else (first[0] if first else "")
        raise ModelDirError(f"{path} does not fit the model in config.json ({detail}): {_RETRAIN}") from None
    return model


def _load_detector(d: Path, det_cls, params: dict, width: int):
    """The detector of ``detector.npz`` + config.json's ``detector_state``, after it scored a probe of
    ``width`` zero rows (the model's output width)."""
    path = d / "detector.npz"
    try:
        with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:  # noqa: BLE001 - truncated zip, not an npz, an object array: all "broken"
        raise ModelDirError(f"{path} is not a readable array file ({type(exc).__name__}: {exc}): {_RETRAIN}") from None
    try:
        det = det_cls.from_state(params, arrays)
        probe = det.decision_function(np.zeros((2, width), dtype=np.float32))
    except ValueError as exc:
        raise ModelDirError(f"{path} (with config.json's detector_state) is not a {det_cls.name} detector for "
                            f"this model: {exc}: {_RETRAIN}") from None
    if np.shape(probe) != (2,) or not np.isfinite(probe).all():
        raise ModelDirError(f"{path} gives no finite scores for a probe of width {width}: {_RETRAIN}")
    return det


def _load_technique(d: Path, pcfg: PipelineConfig, kf):
    """The technique channel of ``technique.json`` (None when the file is absent: an older bundle, channel
    off). Its knowledge columns must be the installed artifact's techniques, in order."""
    path = d / TECHNIQUE_FILE
    if not path.is_file():
        return None
    from detector.technique_detector import TechniqueDetector

    try:
        det = TechniqueDetector.from_json(json.loads(path.read_text()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelDirError(f"{path} is not a technique channel ({exc}): {_RETRAIN}") from None
    have = [c.split(":", 1)[1] for c in det.columns_ if c.startswith("knowledge:")]
    want = list(getattr(kf, "tech_ids", None) or []) if pcfg.knowledge and kf is not None else []
    if have != want:
        raise ModelDirError(f"{path} was fitted on {len(have)} knowledge techniques, the installed knowledge "
                            f"artifact gives {len(want)} (or others): {_RETRAIN}")
    return det


def model_kind(directory: str | Path) -> str:
    """``flows`` or ``transactions``: what the model directory scores (its manifest checked first)."""
    d = Path(directory)
    if not (d / "config.json").is_file():
        raise FileNotFoundError(f"{d} is not a model directory (no config.json)")
    verify_manifest(d)
    return str(_read_config(d).get("kind", "flows"))


def load_bundle(directory: str | Path):
    """Load any model directory: flows -> :class:`ModelBundle`, transactions -> ``FraudBundle``."""
    d = Path(directory)
    if not (d / "config.json").is_file():
        raise FileNotFoundError(f"{d} is not a model directory (no config.json)")
    verify_manifest(d)  # before anything is read
    kind = _read_config(d).get("kind", "flows")
    if kind == "transactions":
        from detector.fraud.bundle import FraudBundle

        return FraudBundle.load(d)
    return ModelBundle.load(d)

"""Loading the model the daemon scores with: bundle directories, `current` pointers, plug-in loaders, and
the watcher that hot-reloads a changed model beside the running one."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detector.metrics import Metrics

log = logging.getLogger("detector.daemon.pipeline")


def resolve_model_dir(path: str | os.PathLike) -> Path:
    """A model directory from ``path``: a bundle dir, a symlink to one, or a pointer file.

    A pointer file (e.g. ``models/current``) holds one line: the model directory, absolute or
    relative to the pointer's folder. Promotion writes a new pointer atomically (rename).
    """
    p = Path(path)
    if p.is_file():
        target = p.read_text().strip()
        t = Path(target)
        return (t if t.is_absolute() else p.parent / t).resolve()
    return p.resolve()


def registry_alias(path: str | os.PathLike) -> str:
    """The registry alias ``path`` follows (``champion``, ``challenger``, ``previous``) when it is one of a
    model registry's alias symlinks (``REGISTRY/champion -> versions/v0002``, training/registry.py); else ""."""
    from detector.model_files import REGISTRY_ALIASES as ALIASES
    p = Path(path)
    try:
        if p.name in ALIASES and p.is_symlink() and (p.parent / "versions").is_dir():
            return p.name
    except OSError:
        pass
    return ""


def model_fingerprint(path: str | os.PathLike) -> str:
    """Changes when the pointer moves or the bundle's config.json is rewritten."""
    d = resolve_model_dir(path)
    cfg = d / "config.json"
    try:
        st = cfg.stat()
        return f"{d}|{st.st_mtime_ns}|{st.st_size}"
    except FileNotFoundError:
        return f"{d}|missing"


@dataclass
class LoadedModel:
    scorer: Any
    version: str
    threshold: float | None
    path: str
    explain: Callable | None = None
    window: dict | None = None  # the window size/lateness the model was trained with
    target_fpr: float | None = None  # the benign FPR its threshold was calibrated for


def default_loader(path: str | os.PathLike) -> LoadedModel:
    """Load a ModelBundle directory (or pointer) and make a fresh stream scorer."""
    from detector.bundle import load_bundle

    d = resolve_model_dir(path)
    bundle = load_bundle(d)
    if hasattr(bundle, "warm_up"):
        bundle.warm_up()  # one-time detector costs here (a hot reload runs in the watcher thread), not in a window
    cfg_bytes = (d / "config.json").read_bytes()
    cfg = json.loads(cfg_bytes)
    version = str(cfg.get("version") or f"{d.name}-{hashlib.sha1(cfg_bytes).hexdigest()[:8]}")
    thr = getattr(bundle, "threshold", None)
    fpr = getattr(getattr(bundle, "calibration", None), "target_fpr", None)
    return LoadedModel(bundle.stream_scorer(), version, float(thr) if thr is not None else None, str(d),
                       window=getattr(bundle, "window", None), target_fpr=float(fpr) if fpr is not None else None)


def plugin_loader(spec: str) -> Callable[[str], LoadedModel]:
    """``"package.module:function"`` -> that function (``model.loader`` in the config)."""
    import importlib

    mod, _, fn = spec.partition(":")
    if not mod or not fn:
        raise ValueError(f"model.loader={spec!r}: expected 'module:function'")
    return getattr(importlib.import_module(mod), fn)


def scorer_model(scorer: Any, version: str = "injected", threshold: float | None = None,
                 target_fpr: float | None = None) -> LoadedModel:
    """Wrap an already-built stream scorer (dependency injection for tests, embedding, benchmarks)."""
    if threshold is None:
        for name in ("threshold", "threshold_"):
            v = getattr(scorer, name, None)
            if isinstance(v, (int, float)):
                threshold = float(v)
                break
    return LoadedModel(scorer, version, threshold, "", target_fpr=target_fpr)


def _loaded_fingerprint(loaded: str | None, path: str) -> str:
    """The fingerprint of the directory a model was loaded from (``path``'s when unknown or unreadable)."""
    if loaded:
        try:
            return model_fingerprint(loaded)
        except Exception:  # noqa: BLE001 - a plugin loader's path need not be a model directory
            pass
    return model_fingerprint(path)


class ModelWatcher:
    """Polls the model path; loads a changed model in its own thread and offers it for a swap."""

    def __init__(self, path: str, loader: Callable[[str], LoadedModel], interval: float, metrics: Metrics,
                 loaded: str | None = None) -> None:
        """``loaded``: the directory the running model was loaded from; its fingerprint is the reference, so a
        pointer (a registry's ``champion``) moved while that model was loading is still seen as a change."""
        self.path, self.loader, self.interval, self.metrics = path, loader, interval, metrics
        self._fp = _loaded_fingerprint(loaded, path)
        self._pending: LoadedModel | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, name="model-watch", daemon=True)

    def start(self) -> ModelWatcher:
        self._t.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def take(self) -> LoadedModel | None:
        with self._lock:
            m, self._pending = self._pending, None
            return m

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            fp = model_fingerprint(self.path)
            if fp == self._fp:
                continue
            try:
                m = self.loader(self.path)
            except Exception as exc:  # noqa: BLE001 - a broken new model must not stop the old one
                log.error("model reload from %s failed (%s); keeping the current model", self.path, exc,
                          extra={"event": "model_reload_failed", "path": str(self.path)})
                self.metrics.model_reloads.labels("failed").inc()
                self._fp = fp  # do not retry the same broken directory every interval
                continue
            self._fp = _loaded_fingerprint(m.path, self.path)  # what was loaded (the pointer may have moved again)
            with self._lock:
                self._pending = m
            log.info("new model %s loaded from %s; swapping at the next window boundary", m.version, m.path,
                     extra={"event": "model_reload_loaded", "model_version": m.version})

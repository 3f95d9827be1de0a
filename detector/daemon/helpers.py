"""Small helpers of the daemon modules: optional config values, the malformed counts, a sink's description."""
from __future__ import annotations

from typing import Any

from detector.alerts.sinks import AlertSink
from detector.metrics import Metrics


def _opt(section: dict, key: str, default: Any) -> Any:
    """An optional config value with a safe default (keys the config schema may not list yet)."""
    v = section.get(key) if isinstance(section, dict) else None
    return default if v is None else v


def _malformed(m: Metrics) -> dict[str, int]:
    out: dict[str, int] = {}
    for metric in m.registry.collect():
        if metric.name == "graphsentry_malformed":
            for smp in metric.samples:
                if smp.name.endswith("_total"):
                    out[smp.labels["reason"]] = int(smp.value)
    return out


def _describe(s: AlertSink) -> str:
    for attr in ("path", "topic", "url"):
        v = getattr(s, attr, None)
        if v:
            return f"{s.name}: {v}"
    return s.name

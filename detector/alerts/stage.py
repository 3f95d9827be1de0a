"""What the daemon runs on each scored window: build its findings, then fold them into ongoing incidents.

``AlertStage.from_config(cfg["alerts"])`` reads ``internal_networks`` (direction, severity) and
``incident_gap`` / ``incident_max_open`` (:class:`detector.alerts.incidents.IncidentTracker`, reseeded
from the first SQLite sink's store); ``build(...)`` takes :func:`detector.alerts.build_alerts`'s
arguments and returns its :class:`WindowAlerts` with the incident findings.
"""
from __future__ import annotations

from typing import Any

from detector.alerts.incidents import IncidentTracker, tracker_from_config
from detector.alerts.ocsf import WindowAlerts, build_alerts
from detector.alerts.severity import DEFAULT_INTERNAL, Networks


class AlertStage:
    def __init__(self, networks: Networks | None = None, tracker: IncidentTracker | None = None) -> None:
        self.networks = networks or Networks()
        self.tracker = tracker

    @classmethod
    def from_config(cls, alerts_cfg: dict[str, Any]) -> AlertStage:
        nets = alerts_cfg.get("internal_networks")
        return cls(Networks(tuple(nets) if nets else DEFAULT_INTERNAL), tracker_from_config(alerts_cfg))

    def build(self, window: Any, ws: Any, **kw: Any) -> WindowAlerts:
        wa = build_alerts(window, ws, networks=self.networks, **kw)
        return self.tracker.fold(wa) if self.tracker is not None else wa

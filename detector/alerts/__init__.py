"""Alerts: OCSF Detection Findings built per window (grouped by source, or by destination for many-to-one
activity), folded across windows into ongoing incidents, and the sinks they are written to."""
from detector.alerts.incidents import IncidentTracker
from detector.alerts.ocsf import CLASS_UID, WindowAlerts, alert_key, build_alerts
from detector.alerts.severity import FindingFacts, Networks, severity
from detector.alerts.sinks import (
    AlertmanagerSink,
    AlertSink,
    JsonLinesSink,
    KafkaAlertSink,
    SQLiteAlertStore,
    make_sink,
)

__all__ = [
    "CLASS_UID", "WindowAlerts", "alert_key", "build_alerts", "severity", "FindingFacts", "Networks",
    "IncidentTracker", "AlertSink", "JsonLinesSink", "SQLiteAlertStore", "KafkaAlertSink", "AlertmanagerSink",
    "make_sink",
]

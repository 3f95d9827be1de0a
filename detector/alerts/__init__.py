"""Alerts: OCSF Detection Findings built per window (aggregated per source and technique) and sinks."""
from detector.alerts.ocsf import CLASS_UID, WindowAlerts, alert_key, build_alerts, severity_id
from detector.alerts.sinks import (
    AlertmanagerSink,
    AlertSink,
    JsonLinesSink,
    KafkaAlertSink,
    SQLiteAlertStore,
    make_sink,
)

__all__ = [
    "CLASS_UID", "WindowAlerts", "alert_key", "build_alerts", "severity_id", "AlertSink", "JsonLinesSink",
    "SQLiteAlertStore", "KafkaAlertSink", "AlertmanagerSink", "make_sink",
]

"""Models, scoring, thresholds, the live daemon, alerts and metrics."""

"""Daemon test fixtures: the real Kafka broker fixtures and the daemon helpers on sys.path."""
from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
for p in (str(_HERE), str(_HERE.parent)):
    if p not in sys.path:
        sys.path.insert(0, p)

from kafka_fixtures import kafka_bootstrap, noida_broker  # noqa: E402,F401  (pytest fixtures)

"""Long-horizon behaviour kept as state across windows: bounded per-entity stores (source host,
source->destination pair, destination service) and the per-flow features derived from them.
See docs/behaviour.md and :class:`ingest.behaviour.state.BehaviourState`."""
from ingest.behaviour.params import BehaviourParams
from ingest.behaviour.state import FEATURE_NAMES, FEATURES_SCHEMA, BehaviourState

__all__ = ["BehaviourParams", "BehaviourState", "FEATURE_NAMES", "FEATURES_SCHEMA"]

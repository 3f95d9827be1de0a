"""Models: time encoder, temporal node memory, E-GraphSAGE encoder, the spatio-temporal GNN."""
from detector.models.memory import NodeMemory
from detector.models.stgnn import STGNN, ModelConfig
from detector.models.time_encoder import TimeEncoder

__all__ = ["NodeMemory", "STGNN", "ModelConfig", "TimeEncoder"]

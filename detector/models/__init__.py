"""Models: time encoder, temporal node memory, E-GraphSAGE encoder, the spatio-temporal GNN."""
from detector.models.memory import NodeMemory
from detector.models.stgnn import FLOW_PARTS, STGNN, ModelConfig, parse_flow_parts
from detector.models.time_encoder import TimeEncoder

__all__ = ["FLOW_PARTS", "NodeMemory", "STGNN", "ModelConfig", "TimeEncoder", "parse_flow_parts"]

"""Graph layers (one ``MessagePassing`` per file)."""
from detector.layers.egraphsage_conv import EGraphSAGEConv

__all__ = ["EGraphSAGEConv"]

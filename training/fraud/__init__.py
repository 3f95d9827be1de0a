"""Transaction (fraud) training and evaluation."""

"""Transaction (fraud) models and scoring."""

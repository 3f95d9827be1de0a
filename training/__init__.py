"""Pretraining, fine-tuning, evaluation and retraining jobs; also hosts the CLI entry point."""

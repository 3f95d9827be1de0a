"""The live detection daemon (`graphsentry serve`): config, pipeline, hot reload."""
from detector.daemon.config import dump as dump_config
from detector.daemon.config import file_config, load_config, redact
from detector.daemon.pipeline import (
    Daemon,
    DaemonSummary,
    LoadedModel,
    default_loader,
    resolve_model_dir,
    run_daemon,
    scorer_model,
)

__all__ = [
    "Daemon", "DaemonSummary", "file_config", "LoadedModel", "default_loader", "dump_config", "load_config", "redact",
    "resolve_model_dir", "run_daemon", "scorer_model",
]

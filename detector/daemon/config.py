"""Daemon configuration: defaults <- YAML/TOML file <- GRAPHSENTRY_* environment variables.

Environment variables are ``GRAPHSENTRY_<SECTION>_<KEY>`` (upper case), e.g.
``GRAPHSENTRY_KAFKA_BOOTSTRAP=broker:9092``, ``GRAPHSENTRY_WINDOW_SIZE=30``,
``GRAPHSENTRY_METRICS_PORT=9200``; lists and mappings (``GRAPHSENTRY_ALERTS_SINKS``) take JSON.
Values are converted to the type of the default. Unknown sections or keys are an error, so a
typo does not silently fall back to a default.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Mapping

import yaml

ENV_PREFIX = "GRAPHSENTRY_"
# Keys whose values are never printed or logged.
SECRET_KEYS = ("password", "secret", "token", "sasl_plain_password", "ssl_password", "api_key")
REDACTED = "***"

DEFAULTS: dict[str, Any] = {
    "source": {
        "type": "file",            # file | kafka
        "paths": [],               # files or directories (file source)
        "format": "auto",          # reader format (file source)
        "follow": False,           # tail files/directories as they grow (False: stop at the end)
        "poll_interval": 0.5,
        "kind": "flows",           # flows | transactions
    },
    "kafka": {
        "bootstrap": "127.0.0.1:9092",
        "topic": "graphsentry-flows",
        "group_id": "graphsentry",
        "format": "auto",          # json | arrow | auto (per message)
        "backend": "kafka-python", # kafka-python | confluent (librdkafka, optional package)
        "dead_letter_topic": "graphsentry-dead-letter",
        "auto_offset_reset": "earliest",
        "max_poll_records": 500,
        "session_timeout_ms": 10000,
        "heartbeat_interval_ms": 3000,
        "commit_interval": 1.0,
        "stop_at_end": False,      # stop once every assigned partition is read to its end (tests, batch)
        "security_protocol": None,
        "sasl_mechanism": None,
        "sasl_plain_username": None,
        "sasl_plain_password": None,
        "ssl_cafile": None,
        "ssl_certfile": None,
        "ssl_keyfile": None,
        "ssl_password": None,
        "client_options": {},      # any other kafka-python option, passed through
    },
    "window": {
        "size": None,              # tumbling window length, seconds of event time (None: the model's)
        "lateness": None,          # allowed lateness before a window closes (None: the model's)
        "idle_timeout": 10.0,      # close windows after this many wall seconds without input (None: never)
    },
    "model": {
        "path": "models/current",  # a ModelBundle directory, or a `current` pointer (symlink or text file)
        "watch": True,             # hot reload when the directory / pointer changes
        "watch_interval": 2.0,
        "loader": None,            # "module:function" returning a LoadedModel (custom scorers); None: ModelBundle
    },
    "alerts": {
        "sinks": [{"type": "sqlite", "path": "out/alerts.db"}],
        "dedup": True,             # one alert per (source endpoint, technique) per window
    },
    "metrics": {
        "enabled": True,
        "host": "127.0.0.1",       # loopback unless an operator opens it up
        "port": 9109,
    },
    "pipeline": {
        "queue_size": 32,          # batches between the source and the windower (backpressure bound)
        "window_queue_size": 8,    # closed windows waiting for the scorer
        "dead_letter_path": None,  # JSON lines for malformed file records (Kafka: the topic above)
        "max_records": None,       # stop after this many records (benchmarks)
        "audit_rows": False,
        "merge_max_rows": 200000,  # records held to merge Kafka partitions on event time
        "partition_idle": 10.0,    # wall seconds a silent partition may hold the others back       # store every scored window's input rows in the SQLite store (tests, audits)
    },
}


# Keys whose default is None but whose value is a number.
NUMBER_KEYS = {("window", "size"), ("window", "lateness"), ("window", "idle_timeout"), ("pipeline", "max_records")}


def _coerce(value: str, default: Any, where: str) -> Any:
    """Convert an environment string to the type of ``default``."""
    if isinstance(default, bool):
        low = value.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{where}={value!r}: expected a boolean (true/false)")
    if isinstance(default, int) and not isinstance(default, bool):
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"{where}={value!r}: expected an integer") from None
    if isinstance(default, float):
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{where}={value!r}: expected a number") from None
    if isinstance(default, (list, dict)):
        try:
            v = json.loads(value)
        except ValueError:
            if isinstance(default, list):  # a comma-separated list is friendlier for paths
                return [s for s in value.split(",") if s]
            raise ValueError(f"{where}: expected JSON") from None
        return v
    if default is None:
        if value.strip().lower() in ("", "none", "null"):
            return None
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _merge(base: dict, over: Mapping, where: str = "") -> dict:
    for k, v in over.items():
        if k not in base:
            raise ValueError(f"unknown config key {where + k!r}; known: {', '.join(sorted(base))}")
        if isinstance(base[k], dict) and k != "client_options":
            if not isinstance(v, Mapping):
                raise ValueError(f"config key {where + k!r} must be a mapping")
            _merge(base[k], v, where + k + ".")
        else:
            base[k] = v
    return base


def load_file(path: str | os.PathLike) -> dict:
    """Parse a YAML (.yaml/.yml) or TOML (.toml) config file into a mapping."""
    p = Path(path)
    text = p.read_text()
    if p.suffix == ".toml":
        import tomllib

        return tomllib.loads(text)
    data = yaml.safe_load(text)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{p}: the top level of a config file must be a mapping")
    return data


def load_config(path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None,
                overrides: Mapping | None = None) -> dict:
    """Effective config: defaults, then the file, then ``overrides``, then GRAPHSENTRY_* env vars."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        _merge(cfg, load_file(path))
    if overrides:
        _merge(cfg, overrides)
    env = os.environ if env is None else env
    sections = sorted(cfg, key=len, reverse=True)
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX):].lower()
        for sec in sections:
            if rest.startswith(sec + "_"):
                key = rest[len(sec) + 1:]
                if key not in cfg[sec]:
                    raise ValueError(f"{name}: unknown key {key!r} in section {sec!r}")
                default = DEFAULTS[sec][key]
                if default is None and (sec, key) in NUMBER_KEYS and value.strip().lower() not in ("", "none", "null"):
                    default = 0.0  # optional numbers: parse as a number, with the variable named on error
                cfg[sec][key] = _coerce(value, default, name)
                break
        # Other GRAPHSENTRY_* variables (e.g. GRAPHSENTRY_SHARED_DATA) belong to other tools.
    validate(cfg)
    return cfg


def validate(cfg: dict) -> None:
    """Raise ValueError quoting the bad value and the rule."""
    if cfg["source"]["type"] not in ("file", "kafka"):
        raise ValueError(f"source.type={cfg['source']['type']!r}: must be 'file' or 'kafka'")
    if cfg["source"]["kind"] not in ("flows", "transactions"):
        raise ValueError(f"source.kind={cfg['source']['kind']!r}: must be 'flows' or 'transactions'")
    if cfg["kafka"]["backend"] not in ("kafka-python", "confluent"):
        raise ValueError(f"kafka.backend={cfg['kafka']['backend']!r}: must be 'kafka-python' or 'confluent'")
    if cfg["kafka"]["format"] not in ("json", "arrow", "auto"):
        raise ValueError(f"kafka.format={cfg['kafka']['format']!r}: must be json, arrow or auto")
    if cfg["window"]["size"] is not None and float(cfg["window"]["size"]) <= 0:
        raise ValueError(f"window.size={cfg['window']['size']!r}: must be > 0 seconds")
    if cfg["window"]["lateness"] is not None and float(cfg["window"]["lateness"]) < 0:
        raise ValueError(f"window.lateness={cfg['window']['lateness']!r}: must be >= 0")
    if int(cfg["pipeline"]["queue_size"]) < 1:
        raise ValueError(f"pipeline.queue_size={cfg['pipeline']['queue_size']!r}: must be >= 1")
    if not isinstance(cfg["alerts"]["sinks"], list):
        raise ValueError("alerts.sinks must be a list of {type: ...} mappings")
    for s in cfg["alerts"]["sinks"]:
        if not isinstance(s, dict) or s.get("type") not in ("sqlite", "jsonl", "kafka", "alertmanager"):
            raise ValueError(f"alerts.sinks entry {s!r}: type must be sqlite, jsonl, kafka or alertmanager")
    if cfg["source"]["type"] == "file" and not cfg["source"]["paths"]:
        raise ValueError("source.paths is empty: give files or directories to read (or source.type: kafka)")


def redact(obj: Any) -> Any:
    """A copy with every secret-looking value replaced by ``***`` (for --print-config and logs)."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if any(s in str(k).lower() for s in SECRET_KEYS) and v not in (None, ""):
                out[k] = REDACTED
            else:
                out[k] = redact(v)
        return out
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    if isinstance(obj, str) and "://" in obj and "@" in obj.split("://", 1)[1].split("/", 1)[0]:
        # user:password@host in a URL
        scheme, rest = obj.split("://", 1)
        host = rest.split("@", 1)[1]
        return f"{scheme}://{REDACTED}@{host}"
    return obj


def dump(cfg: dict) -> str:
    """The effective config as YAML, secrets redacted."""
    return yaml.safe_dump(redact(cfg), sort_keys=False)


def file_config(paths: list[str], model: str, out_dir: str = "out", metrics_port: int = 9109,
                env: Mapping[str, str] | None = None) -> dict:
    """A ready config for a finite run over files (what ``make run`` uses): file source, the model's
    own windows, alerts in ``out_dir/alerts.db`` (SQLite) and ``out_dir/alerts.jsonl``, dead letters
    in ``out_dir/dead-letter.jsonl``, metrics on 127.0.0.1:``metrics_port`` (0: any free port)."""
    out = Path(out_dir)
    return load_config(overrides={
        "source": {"type": "file", "paths": [str(p) for p in paths], "follow": False},
        "model": {"path": str(model), "watch": False},
        "alerts": {"sinks": [{"type": "sqlite", "path": str(out / "alerts.db")},
                             {"type": "jsonl", "path": str(out / "alerts.jsonl")}]},
        "metrics": {"port": int(metrics_port)},
        "pipeline": {"dead_letter_path": str(out / "dead-letter.jsonl")},
    }, env={} if env is None else env)

"""Daemon configuration: defaults <- YAML/TOML file <- ``overrides`` <- GRAPHSENTRY_* environment variables.

Every level is validated by one pydantic model per section (``extra="forbid"``): an unknown
section, key or alert-sink key is an error naming its dotted path (``alerts.sinks[0].pth``) and
the valid keys, so a typo never silently falls back to a default. Types and ranges are checked
too (ports 0-65535, positive durations and sizes, the enums). Every problem is one line of a
:class:`ConfigError` (a ``ValueError``); the CLI prints it without a traceback (exit 2).

Environment variables are ``GRAPHSENTRY_<SECTION>_<KEY>`` (upper case), e.g.
``GRAPHSENTRY_KAFKA_BOOTSTRAP=broker:9092``, ``GRAPHSENTRY_WINDOW_SIZE=30``,
``GRAPHSENTRY_METRICS_PORT=9200``; the schema types them; lists and mappings
(``GRAPHSENTRY_ALERTS_SINKS``) take JSON (a list of strings also takes ``a,b``); ``null``,
``none`` or an empty value is null where a key may be null.

:func:`load_config` returns the validated config as a plain nested dict
(``cfg["kafka"]["bootstrap"]``), every key present. ``python -m detector.daemon.config
--reference`` prints the reference (docs/configuration.md is that text); ``python -m
detector.daemon.config FILE...`` checks config files.

One module, above the 600-line aim on purpose: it is one schema (a section class per config section, each
key's type, default and description), read top to bottom as the reference is; splitting the sections
apart would scatter the one place an operator's key is defined.
"""
from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

ENV_PREFIX = "GRAPHSENTRY_"
# Keys whose values are never printed or logged.
SECRET_KEYS = ("password", "secret", "token", "sasl_plain_password", "ssl_password", "api_key")
REDACTED = "***"


class ConfigError(ValueError):
    """A config that does not validate; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        if len(self.problems) == 1:
            text = self.problems[0]
        else:
            text = f"{len(self.problems)} problems in the config:\n" + ";\n".join(self.problems)
        super().__init__(text)


# --------------------------------------------------------------------------------------------
# value types


def _no_bool(v: Any) -> Any:
    # pydantic's lax mode reads true as 1; a boolean where a number belongs is a mistake
    if isinstance(v, bool):
        raise PydanticCustomError("number_type", "expected a number, got a boolean")
    return v


PosFloat = Annotated[float, BeforeValidator(_no_bool), Field(gt=0)]
NonNegFloat = Annotated[float, BeforeValidator(_no_bool), Field(ge=0)]
PosInt = Annotated[int, BeforeValidator(_no_bool), Field(ge=1)]
NonNegInt = Annotated[int, BeforeValidator(_no_bool), Field(ge=0)]
Port = Annotated[int, BeforeValidator(_no_bool), Field(ge=0, le=65535)]
NonEmpty = Annotated[str, Field(min_length=1)]


def _loader_spec(v: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", v):
        raise PydanticCustomError("config_value", "expected module:function, e.g. mypkg.scorers:load")
    return v


def _http_url(v: str) -> str:
    if not re.match(r"https?://[^/\s]+", v):
        raise PydanticCustomError("config_value", "expected an http:// or https:// URL, e.g. http://alertmanager:9093")
    return v


def _cidr(v: str) -> str:
    import ipaddress

    try:
        ipaddress.ip_network(v, strict=False)
    except ValueError:
        raise PydanticCustomError("config_value", "expected a CIDR network, e.g. 10.0.0.0/8") from None
    return v


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=False)


def _check_bootstrap(v: str) -> str:
    for part in v.split(","):
        part = part.strip()
        host, _, port = part.rpartition(":") if ":" in part else (part, "", "")
        if not part or not host or (port and not (port.isdigit() and 0 < int(port) <= 65535)):
            raise ValueError(f"expected host:port[,host:port...], bad entry {part!r}")
    return v


# --------------------------------------------------------------------------------------------
# sections


class SourceSection(_Section):
    """Where records come from."""

    type: Literal["file", "kafka"] = Field("file", description="`file` (paths below) or `kafka` (the kafka section)")
    paths: list[NonEmpty] = Field(default_factory=list, description="files or directories (file source)")
    format: NonEmpty = Field("auto", description="reader format of the files (`graphsentry formats` lists them)")
    follow: bool = Field(False, description="tail files/directories as they grow (false: stop at the end)")
    poll_interval: PosFloat = Field(0.5, description="seconds between polls when following files")
    kind: Literal["flows", "transactions"] = Field("flows", description="record kind")

    @field_validator("format")
    @classmethod
    def _known_format(cls, v: str) -> str:
        from ingest.readers import _ALIASES, FORMATS

        known = ["auto", *FORMATS, *_ALIASES]
        if v not in known:
            raise PydanticCustomError("config_enum", "unknown format; valid: {valid}",
                                      {"valid": ", ".join(["auto", *FORMATS])})
        return v


class KafkaSection(_Section):
    """The Kafka source (and the default cluster of the Kafka alert sink)."""

    bootstrap: NonEmpty = Field("127.0.0.1:9092", description="bootstrap servers, `host:port[,host:port...]`")
    topic: NonEmpty = Field("graphsentry-flows", description="topic of the records")
    group_id: NonEmpty = Field("graphsentry", description="consumer group; replicas with one group share the partitions")
    format: Literal["json", "arrow", "auto"] = Field(
        "auto", description="message format: JSON per record, batched Arrow IPC, or decided per message")
    backend: Literal["kafka-python", "confluent"] = Field(
        "kafka-python", description="consumer library (`confluent`: librdkafka, `pip install graphsentry[kafka-fast]`)")
    dead_letter_topic: NonEmpty | None = Field("graphsentry-dead-letter",
                                               description="undecodable messages go here (null: count only)")
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="where a new consumer group starts")
    max_poll_records: PosInt = Field(2000, description="records per poll (a poll's JSON messages are decoded at once)")
    fetch_max_wait_ms: PosInt = Field(
        100, description="longest wait of the broker for new data per fetch, ms (lower: records arrive sooner)")
    session_timeout_ms: PosInt = Field(10000, description="consumer session timeout, ms")
    heartbeat_interval_ms: PosInt = Field(3000, description="consumer heartbeat, ms (below the session timeout)")
    commit_interval: PosFloat = Field(1.0, description="seconds between offset commits of what is durable")
    stop_at_end: bool = Field(False, description="stop once every assigned partition is read to its end (tests, batch)")
    retry_backoff_max_s: PosFloat = Field(30.0, description="longest wait, seconds, between retries to reach the broker")
    connect_timeout_s: PosFloat = Field(5.0, description="seconds one attempt to reach the broker may take")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] | None = Field(
        None, description="Kafka security protocol")
    sasl_mechanism: Literal["PLAIN", "GSSAPI", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = Field(
        None, description="SASL mechanism")
    sasl_plain_username: str | None = Field(None, description="SASL user")
    sasl_plain_password: str | None = Field(
        None, description="SASL password (secret: set GRAPHSENTRY_KAFKA_SASL_PLAIN_PASSWORD rather than the file)")
    ssl_cafile: str | None = Field(None, description="CA bundle (PEM)")
    ssl_certfile: str | None = Field(None, description="client certificate (PEM)")
    ssl_keyfile: str | None = Field(None, description="client key (PEM)")
    ssl_password: str | None = Field(None, description="password of the client key (secret)")
    client_options: dict[str, Any] = Field(default_factory=dict,
                                           description="any other client option, passed through unchanged")

    @field_validator("bootstrap")
    @classmethod
    def _bootstrap(cls, v: str) -> str:
        return _check_bootstrap(v)

    @model_validator(mode="after")
    def _heartbeat_below_session(self) -> KafkaSection:
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise PydanticCustomError(
                "config", "kafka.heartbeat_interval_ms={hb} must be lower than kafka.session_timeout_ms={st}",
                {"hb": self.heartbeat_interval_ms, "st": self.session_timeout_ms})
        return self


class WindowSection(_Section):
    """Event-time tumbling windows."""

    size: PosFloat | None = Field(None, description="window length, seconds of event time (null: the model's)")
    lateness: NonNegFloat | None = Field(None, description="allowed lateness before a window closes, s (null: the model's)")
    idle_timeout: PosFloat | None = Field(
        10.0, description="close open windows after this many wall seconds without input (null: never)")


class ModelSection(_Section):
    """The model scored on each window."""

    path: NonEmpty = Field("models/current",
                           description="a model bundle directory, or a `current` pointer (symlink or text file)")
    watch: bool = Field(True, description="hot reload when the directory or pointer changes")
    watch_interval: PosFloat = Field(2.0, description="seconds between checks for a new model")
    loader: Annotated[str, AfterValidator(_loader_spec)] | None = Field(
        None, description="`module:function` returning a LoadedModel (custom scorers); null: the model bundle")


class _Sink(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SQLiteSink(_Sink):
    """SQLite alert store: an upsert on the alert id, queryable by time, source, technique."""

    type: Literal["sqlite"] = Field(description="`sqlite`")
    path: NonEmpty = Field(description="database file (created with its directory); one per process")
    required: bool = Field(True, description="offsets are committed only after this sink flushed")


class JsonLinesSink(_Sink):
    """One OCSF JSON object per line, fsync'd on flush."""

    type: Literal["jsonl"] = Field(description="`jsonl`")
    path: NonEmpty = Field(description="file appended to (created with its directory)")
    required: bool = Field(True, description="offsets are committed only after this sink flushed")


class KafkaSink(_Sink):
    """Alerts to a Kafka topic (acks=all), keyed by source endpoint."""

    type: Literal["kafka"] = Field(description="`kafka`")
    topic: NonEmpty = Field("graphsentry-alerts", description="alert topic")
    bootstrap: NonEmpty | None = Field(None, description="another cluster (null: `kafka.bootstrap` and its security keys)")
    required: bool = Field(True, description="offsets are committed only after the broker acknowledged")
    flush_timeout: PosFloat = Field(10.0, description="seconds a flush waits for the broker's acknowledgements "
                                                      "before it fails (and is retried)")

    @field_validator("bootstrap")
    @classmethod
    def _bootstrap(cls, v: str | None) -> str | None:
        return v if v is None else _check_bootstrap(v)


class AlertmanagerSink(_Sink):
    """Alertmanager API v2 (`POST /api/v2/alerts`): a notification, so not required by default."""

    type: Literal["alertmanager"] = Field(description="`alertmanager`")
    url: Annotated[str, AfterValidator(_http_url)] = Field(
        "http://127.0.0.1:9093", description="Alertmanager base URL (`http(s)://host:port`)")
    required: bool = Field(False, description="true: a down Alertmanager holds back offset commits")


#: every alert sink type, by its ``type`` value (detector/alerts/sinks.py:make_sink builds them)
SINKS: dict[str, type[_Sink]] = {"sqlite": SQLiteSink, "jsonl": JsonLinesSink, "kafka": KafkaSink,
                                 "alertmanager": AlertmanagerSink}
Sink = Annotated[SQLiteSink | JsonLinesSink | KafkaSink | AlertmanagerSink, Field(discriminator="type")]


class AlertsSection(_Section):
    """Where alerts go."""

    sinks: list[Sink] = Field(default_factory=lambda: [SQLiteSink(type="sqlite", path="out/alerts.db")],
                              min_length=1, description="alert sinks, each `{type: ..., ...}` (below)")
    dedup: bool = Field(True, description="no effect, accepted so that older configs load: the records of a "
                                          "window are always grouped into findings (docs/findings.md)")
    incident_gap: NonNegFloat = Field(
        0.0, description="seconds of event time without activity after which the same (source or destination, "
                         "technique) opens a new finding; windows within it update one finding (count, first/last "
                         "seen, OCSF activity Update). 0: one finding per window (docs/findings.md)")
    incident_max_open: PosInt = Field(100_000, description="ongoing findings tracked at most (the least recently "
                                                           "active are closed first)")
    internal_networks: list[Annotated[str, AfterValidator(_cidr)]] | None = Field(
        None, description="the monitored networks (CIDRs): traffic from outside into them raises a finding's "
                          "severity; null: private, loopback, link-local and CGNAT space")


class MetricsSection(_Section):
    """Prometheus /metrics, /healthz and /readyz on one port."""

    enabled: bool = Field(True, description="serve the metrics port")
    host: NonEmpty = Field("127.0.0.1", description="bind address (loopback unless an operator opens it up)")
    port: Port = Field(9109, description="port (0: any free port)")


class PipelineSection(_Section):
    """Queues and bounds between the stages."""

    queue_size: PosInt = Field(32, description="batches between the source and the windower (backpressure bound)")
    window_queue_size: PosInt = Field(8, description="closed windows waiting for the scorer")
    dead_letter_path: NonEmpty | None = Field(None, description="JSON lines for malformed file records (Kafka: the topic)")
    max_records: PosInt | None = Field(None, description="stop after this many records (benchmarks)")
    audit_rows: bool = Field(False, description="store every scored window's input rows in the SQLite store")
    merge_max_rows: PosInt = Field(200000, description="records held to merge Kafka partitions on event time")
    partition_idle: PosFloat = Field(10.0, description="wall seconds a silent partition may hold the others back")
    progress_interval: NonNegFloat = Field(30.0, description="seconds between progress log lines (0: none)")
    fit_check_records: NonNegInt = Field(
        10000, description="recent scored records the model-fit check looks at (0: no check)")
    fit_check_min_records: PosInt = Field(2000, description="records needed before the model-fit check can warn")
    fit_warn_interval: PosFloat = Field(600.0, description="seconds between two model-fit warnings in the log")
    behaviour_state_dir: NonEmpty | None = Field(
        None, description="directory the scorer's long-horizon behaviour state is checkpointed in, with the source "
                          "positions it covers (Kafka offsets are then committed only up to a saved state); a "
                          "restart resumes from it (null: not persisted, a restart starts it fresh)")
    behaviour_checkpoint_interval: PosFloat = Field(
        30.0, description="seconds between two behaviour checkpoints (with behaviour_state_dir, also between offset "
                          "commits); one more at shutdown")
    behaviour_checkpoints_kept: PosInt = Field(3, description="behaviour checkpoints kept (the newest)")
    stop_grace: NonNegFloat = Field(
        30.0, description="seconds a required sink may keep failing after a stop before the daemon gives up "
                          "(its offsets are not committed: a restart re-reads them)")


class LogSection(_Section):
    """Daemon logging."""

    format: Literal["text", "json"] = Field(
        "text", description="log lines on stderr: text or JSON lines (the --log-format flag wins)")


class CalibrationSection(_Section):
    """Grace-period calibration of the deployed alert threshold on this network (docs/calibration.md)."""

    grace: PosFloat | None = Field(
        None, description="seconds of event time whose scores set the deployed threshold, without labels "
                          "(null: off, the model's trained threshold is used)")
    method: Literal["robust", "quantile", "trained"] = Field(
        "robust", description="robust: entity-trimmed quantile; quantile: plain grace quantile; trained: never move")
    target_fpr: Annotated[float, BeforeValidator(_no_bool), Field(gt=0, lt=1)] | None = Field(
        None, description="benign FPR the deployed threshold aims at (null: the model's)")
    max_shift: PosFloat | None = Field(
        50.0, description="the deployed threshold stays within trained ± max_shift × the grace scores' robust "
                          "spread (null: unbounded)")
    drift_rate: NonNegFloat = Field(
        0.5, description="largest move per hour of event time after grace, in robust spreads (0: frozen)")
    state_path: NonEmpty | None = Field(
        None, description="JSON file the calibration state is kept in (written atomically; a restart resumes "
                          "from it; null: not persisted)")


def _size(v: Any) -> Any:
    """Bytes from a number or a size text (``"20GB"``, ``"500MiB"``; read by ingest.archive_layout.parse_size)."""
    _no_bool(v)
    if isinstance(v, str):
        from ingest.archive_layout import parse_size

        try:
            return parse_size(v)
        except ValueError:
            raise PydanticCustomError("config_value", "expected a size: bytes, or a number with a unit "
                                                      "(KB, MB, GB, TB, KiB, MiB, GiB, TiB), e.g. 20GB") from None
    return v


def _duration(v: Any) -> Any:
    """Seconds from a number or a duration text (``"30d"``, ``"12h"``; read by ingest.windows.parse_duration)."""
    _no_bool(v)
    if isinstance(v, str):
        from ingest.windows import parse_duration

        try:
            return parse_duration(v)
        except ValueError:
            raise PydanticCustomError("config_value", "expected a duration: seconds, or a number with a unit "
                                                      "(s, m, h, d), e.g. 30d") from None
    return v


class ArchiveSection(_Section):
    """Every scored record, its score, alert and source position, to Parquet for retraining (docs/archive.md)."""

    # Flushed before the records' offsets are committed, like a required alert sink; a restart archives
    # nothing twice (docs/daemon-operations.md, "Archive").

    enabled: bool = Field(False, description="archive every scored record (needs `path`)")
    path: NonEmpty | None = Field(None, description="the archive directory (created)")
    max_bytes: Annotated[int, BeforeValidator(_size), Field(ge=1)] | None = Field(
        None, description="retention: keep the archive at most this big, bytes or a size like `20GB` (whole oldest "
                          "hours are deleted; null: no limit)")
    max_age: Annotated[float, BeforeValidator(_duration), Field(gt=0)] | None = Field(
        None, description="retention: delete hours of event time older than this, seconds or a duration like "
                          "`30d` (null: no limit); keep it far above the time a restart takes")
    rows_per_file: PosInt = Field(
        1_000_000, description="records buffered before the writer flushes by itself (the daemon also flushes "
                               "after every batch of scored windows)")


class GraphsentryConfig(BaseModel):
    """The whole daemon config."""

    model_config = ConfigDict(extra="forbid")

    source: SourceSection = Field(default_factory=SourceSection)
    kafka: KafkaSection = Field(default_factory=KafkaSection)
    window: WindowSection = Field(default_factory=WindowSection)
    model: ModelSection = Field(default_factory=ModelSection)
    alerts: AlertsSection = Field(default_factory=AlertsSection)
    metrics: MetricsSection = Field(default_factory=MetricsSection)
    pipeline: PipelineSection = Field(default_factory=PipelineSection)
    log: LogSection = Field(default_factory=LogSection)
    calibration: CalibrationSection = Field(default_factory=CalibrationSection)
    archive: ArchiveSection = Field(default_factory=ArchiveSection)

    @model_validator(mode="after")
    def _file_source_has_paths(self) -> GraphsentryConfig:
        if self.source.type == "file" and not self.source.paths:
            raise PydanticCustomError(
                "config", "source.paths is empty: give files or directories to read (or source.type: kafka)")
        if self.archive.enabled and not self.archive.path:
            raise PydanticCustomError(
                "config", "archive.enabled is true but archive.path is not set: give the archive directory")
        return self


SECTIONS: dict[str, type[_Section]] = {
    name: f.annotation for name, f in GraphsentryConfig.model_fields.items()  # type: ignore[misc]
}
#: the built-in defaults, as the nested dict load_config returns
DEFAULTS: dict[str, Any] = GraphsentryConfig.model_construct().model_dump()


# --------------------------------------------------------------------------------------------
# errors


def _short(v: Any, n: int = 80) -> str:
    r = repr(v)
    return r if len(r) <= n else r[: n - 3] + "..."


def _secret(key: Any) -> bool:
    return any(s in str(key).lower() for s in SECRET_KEYS)


def _shown(value: Any, loc: tuple) -> str:
    """A bad value as an error line quotes it: secrets and URL credentials never shown."""
    if loc and _secret(loc[-1]):
        return REDACTED
    return _short(redact(value))


def _path(loc: tuple) -> tuple[str, str | None]:
    """Dotted path of a pydantic error location (the sink tag dropped), and the sink type if any."""
    parts: list[str] = []
    sink_type = None
    i = 0
    while i < len(loc):
        k = loc[i]
        if isinstance(k, int):
            parts[-1] += f"[{k}]"
            if loc[:2] == ("alerts", "sinks") and i == 2 and i + 1 < len(loc) and loc[i + 1] in SINKS:
                sink_type = loc[i + 1]
                i += 1  # the discriminator tag pydantic puts in the location
        else:
            parts.append(str(k))
        i += 1
    return ".".join(parts), sink_type


def _model_at(loc: tuple) -> type[BaseModel] | None:
    if not loc:
        return GraphsentryConfig
    if len(loc) == 1:
        return SECTIONS.get(loc[0])
    if loc[:2] == ("alerts", "sinks") and len(loc) == 4:
        return SINKS.get(loc[3])
    return None


def _unknown_key(loc: tuple) -> str:
    key, parent = str(loc[-1]), loc[:-1]
    model = _model_at(parent)
    valid = sorted(model.model_fields) if model else []
    near = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    if not parent:
        return f"unknown section {key!r}{hint}; valid sections: {', '.join(valid)}"
    where, sink_type = _path(parent)
    kind = f" (type {sink_type})" if sink_type else ""
    return f"unknown key {key!r} in {where}{kind}{hint}; valid keys: {', '.join(valid)}"


def _problem(err: dict, from_env: bool = False) -> str:
    loc, typ, msg = tuple(err["loc"]), err["type"], err["msg"]
    where, sink_type = _path(loc)
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if typ == "config":
        return msg
    if typ == "extra_forbidden":
        return _unknown_key(loc)
    if typ == "union_tag_invalid":
        return f"{where}.type={_shown(err['input'].get('type'), loc)}: unknown sink type; valid: {', '.join(SINKS)}"
    if typ == "union_tag_not_found":
        return f"{where}: a sink needs a type: one of {', '.join(SINKS)}"
    if typ == "missing":
        kind = f" (type {sink_type})" if sink_type else ""
        return f"{where}: required key missing{kind}"
    if typ == "list_type" and loc == ("alerts", "sinks"):
        return f"{where}={_shown(err['input'], loc)}: must be a list of sinks, e.g. [{{type: sqlite, path: alerts.db}}]"
    if typ == "too_short" and loc == ("alerts", "sinks"):
        return f"{where} is empty: give at least one sink, or alerts are lost"
    if typ in ("model_type", "model_attributes_type", "dict_type"):
        model = _model_at(loc) if len(loc) != 3 else None
        keys = f" of keys ({', '.join(sorted(model.model_fields))})" if model else ""
        return f"{where}={_shown(err['input'], loc)}: must be a mapping{keys}"
    if from_env:  # the variable and its value lead the line already
        return f"{where}: {msg}"
    return f"{where}={_shown(err['input'], loc)}: {msg}"


def _origin_of(loc: tuple, origin: Mapping[tuple, str]) -> str | None:
    return origin.get(tuple(loc[:2])) or origin.get(tuple(loc[:1]))


def _validate(raw: Mapping, origin: Mapping[tuple, str] | None = None) -> GraphsentryConfig:
    try:
        return GraphsentryConfig.model_validate(raw)
    except ValidationError as exc:
        problems = []
        # unknown keys first: a key missing next to an unknown one is usually the same typo
        for e in sorted(exc.errors(include_url=False), key=lambda e: e["type"] != "extra_forbidden"):
            src = _origin_of(tuple(e["loc"]), origin or {})
            line = _problem(e, from_env=bool(src and src.startswith(ENV_PREFIX)))
            problems.append(f"{src}: {line}" if src else line)
        raise ConfigError(problems) from None


def validate(cfg: Mapping) -> dict:
    """Validate a nested config mapping (missing keys take their defaults); the effective dict."""
    return _validate(cfg).model_dump()


# --------------------------------------------------------------------------------------------
# files


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML keeps the last silently)."""

    @classmethod
    def parse(cls, text: str) -> Any:
        """The one document in ``text``, built with safe constructors only (plain data, no objects)."""
        loader = cls(text)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()

    def construct_mapping(self, node, deep=False):  # noqa: ANN001 - PyYAML API
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                continue  # PyYAML reports unhashable keys itself
            if key in seen:
                m = key_node.start_mark
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", m)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _yaml_error(p: Path, exc: yaml.YAMLError) -> ConfigError:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    ctx = getattr(exc, "context", None)
    cmark = getattr(exc, "context_mark", None)
    if ctx and cmark is not None:
        ctx = f"{ctx} started on line {cmark.line + 1}, column {cmark.column + 1}"
    text = f"{problem} ({ctx})" if ctx else problem
    if mark is not None:
        return ConfigError([f"{p}: not valid YAML (line {mark.line + 1}, column {mark.column + 1}): {text}"])
    return ConfigError([f"{p}: not valid YAML: {text}"])


def load_file(path: str | os.PathLike) -> dict:
    """Parse a YAML (.yaml/.yml, or JSON) or TOML (.toml) config file into a mapping of sections."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(2, "config file not found", str(p))
    if p.is_dir():
        raise ConfigError([f"{p}: is a directory, not a config file"])
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{p}: not UTF-8 text (byte {exc.start}); is this a config file?"]) from None
    if p.suffix.lower() == ".toml":
        import tomllib

        try:
            data: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            msg = str(exc)
            m = re.search(r"\s*\(at line (\d+), column (\d+)\)", msg)
            if m:
                msg = msg[: m.start()] + msg[m.end():]
                raise ConfigError([f"{p}: not valid TOML (line {m[1]}, column {m[2]}): {msg}"]) from None
            raise ConfigError([f"{p}: not valid TOML: {msg}"]) from None
    else:
        try:
            data = _UniqueKeyLoader.parse(text)
        except yaml.YAMLError as exc:
            raise _yaml_error(p, exc) from None
    if data is None or data == {}:
        raise ConfigError([f"{p}: the config file is empty; give at least one section "
                           f"({', '.join(SECTIONS)}), or leave out --config to use the defaults"])
    if not isinstance(data, dict):
        raise ConfigError([f"{p}: the top level must be a mapping of sections ({', '.join(SECTIONS)}), "
                           f"got a {type(data).__name__}"])
    return data


# --------------------------------------------------------------------------------------------
# environment


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """(the type without Annotated/Optional, whether None is allowed)."""
    nullable = False
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            nullable = nullable or len(args) < len(typing.get_args(tp))
            if len(args) != 1:
                return tp, nullable
            tp = args[0]
        else:
            return tp, nullable


def _env_value(name: str, value: str, annotation: Any) -> Any:
    tp, nullable = _unwrap(annotation)
    if nullable and value.strip().lower() in ("", "none", "null"):
        return None
    container = typing.get_origin(tp) or tp
    if container in (list, dict):
        try:
            return json.loads(value)
        except ValueError:
            if container is list:  # a comma-separated list is friendlier for paths
                return [s.strip() for s in value.split(",") if s.strip()]
            raise ConfigError([f"{name}: expected a JSON object, e.g. '{{\"key\": \"value\"}}' "
                               f"(the value is not valid JSON)"]) from None
    return value.strip()


def _env_layer(env: Mapping[str, str], origin: dict) -> dict:
    layer: dict[str, dict] = {}
    sections = sorted(SECTIONS, key=len, reverse=True)
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX):].lower()
        for sec in sections:
            if rest.startswith(sec + "_"):
                key = rest[len(sec) + 1:]
                fields = SECTIONS[sec].model_fields
                if key not in fields:
                    near = difflib.get_close_matches(key, list(fields), n=1)
                    hint = f" (did you mean {ENV_PREFIX}{sec.upper()}_{near[0].upper()}?)" if near else ""
                    raise ConfigError([f"{name}: unknown key {key!r} in section {sec!r}{hint}; "
                                       f"valid keys: {', '.join(sorted(fields))}"])
                layer.setdefault(sec, {})[key] = _env_value(name, value, fields[key].annotation)
                origin[(sec, key)] = f"{name}={REDACTED if _secret(key) else _short(redact(value), 60)}"
                break
        # Other GRAPHSENTRY_* variables (e.g. GRAPHSENTRY_SHARED_DATA) belong to other tools.
    return layer


def _merge(base: dict, layer: Mapping, label: str | None, origin: dict) -> None:
    """Section by section: a key of a section replaces the earlier value (lists and mappings whole)."""
    for sec, val in layer.items():
        if isinstance(val, Mapping) and isinstance(base.get(sec), dict):
            base[sec].update(val)
        elif isinstance(val, Mapping):
            base[sec] = dict(val)
        elif val is None and sec in SECTIONS:
            base.setdefault(sec, {})  # `window:` with every key commented out
        else:
            base[sec] = val
        if label is None:
            origin.pop((sec,), None)
        else:
            origin[(sec,)] = label
        if isinstance(val, Mapping):
            for k in val:
                if label is None:
                    origin.pop((sec, k), None)
                else:
                    origin[(sec, k)] = label


def load_config(path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None,
                overrides: Mapping | None = None) -> dict:
    """Effective config: defaults, then the file, then GRAPHSENTRY_* env vars, then ``overrides``
    (the command-line flags: the most specific setting wins).

    Returns the validated config as a nested dict with every section and key. Raises
    :class:`ConfigError` (a ValueError) with one line per problem, FileNotFoundError for a
    missing file.
    """
    raw: dict[str, Any] = {}
    origin: dict[tuple, str] = {}
    if path is not None:
        _merge(raw, load_file(path), str(path), origin)
    env = os.environ if env is None else env
    _merge(raw, _env_layer(env, origin), None, {})
    if overrides:
        _merge(raw, overrides, None, origin)
    return _validate(raw, origin).model_dump()


# --------------------------------------------------------------------------------------------
# output


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
    own windows, alerts in ``out_dir/alerts.db`` (SQLite) and ``out_dir/alerts.jsonl`` (ongoing activity folded
    into one finding, ``alerts.incident_gap`` 600 s), dead letters
    in ``out_dir/dead-letter.jsonl``, metrics on 127.0.0.1:``metrics_port`` (0: any free port)."""
    out = Path(out_dir)
    return load_config(overrides={
        "source": {"type": "file", "paths": [str(p) for p in paths], "follow": False},
        "model": {"path": str(model), "watch": False},
        "alerts": {"sinks": [{"type": "sqlite", "path": str(out / "alerts.db")},
                             {"type": "jsonl", "path": str(out / "alerts.jsonl")}],
                   "incident_gap": 600.0},  # one finding per ongoing activity (docs/findings.md)
        "metrics": {"port": int(metrics_port)},
        "pipeline": {"dead_letter_path": str(out / "dead-letter.jsonl")},
    }, env={} if env is None else env)


# --------------------------------------------------------------------------------------------
# reference (docs/configuration.md is generated by this; tests/detector/test_daemon_config.py checks it)


def _type_text(prop: dict, defs: dict) -> str:
    if "$ref" in prop:
        return _type_text(defs[prop["$ref"].rsplit("/", 1)[1]], defs)
    if "anyOf" in prop:
        alts = [_type_text(a, defs) for a in prop["anyOf"]]
        return " or ".join(a for a in alts if a != "null") + (" or null" if "null" in alts else "")
    if "const" in prop:
        return f"`{prop['const']}`"
    if "enum" in prop:
        return " \\| ".join(f"`{v}`" for v in prop["enum"])
    t = prop.get("type")
    if t == "array":
        items = prop.get("items", {})
        if "discriminator" in items or "oneOf" in items:
            return "list of sinks"
        return f"list of {_type_text(items, defs).replace('string', 'strings', 1)}"
    if t == "object":
        return "mapping"
    if t == "null":
        return "null"
    text = {"integer": "integer", "number": "number", "string": "string", "boolean": "boolean"}.get(t, str(t))
    bounds = []
    for keys, op in ((("exclusiveMinimum", "gt"), ">"), (("minimum", "ge"), ">="), (("maximum", "le"), "<="),
                     (("exclusiveMaximum", "lt"), "<")):
        for k in keys:
            if k in prop:
                bounds.append(f"{op} {prop[k]:g}")
    if prop.get("minLength") == 1:
        bounds.append("non-empty")
    if "minItems" in prop:
        bounds.append(f"at least {prop['minItems']}")
    if "pattern" in prop:
        bounds.append(f"matching `{prop['pattern']}`")
    return text + (f" ({', '.join(bounds)})" if bounds else "")


def _default_text(model: type[BaseModel], name: str) -> str:
    f = model.model_fields[name]
    if f.is_required():
        return "required"
    v = f.get_default(call_default_factory=True)
    if isinstance(v, list):
        v = [x.model_dump() if isinstance(x, BaseModel) else x for x in v]
    return f"`{json.dumps(v)}`"


def _table(model: type[BaseModel], prefix: str) -> list[str]:
    schema = model.model_json_schema()
    defs = schema.get("$defs", {})
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name, prop in schema["properties"].items():
        desc = model.model_fields[name].description or ""
        if "items" in prop and prop.get("minItems"):
            prop = {**prop, "type": "array"}
        typ = _type_text(prop, defs)
        if prop.get("type") == "array" and prop.get("minItems"):
            typ += f" (at least {prop['minItems']})"
        rows.append(f"| `{prefix}{name}` | {typ} | {_default_text(model, name)} | {desc} |")
    return rows


_REFERENCE_HEAD = """\
# Daemon configuration reference

<!-- Generated by `python -m detector.daemon.config --reference > docs/configuration.md`
     from the schema in detector/daemon/config.py; a test fails when this file differs. -->

`graphsentry serve --config FILE` reads YAML (`.yaml`, `.yml`; JSON is YAML too) or TOML (`.toml`).
Order, later wins: built-in defaults <- the file <- command-line flags (`--input`, `--model`) <-
environment variables `GRAPHSENTRY_<SECTION>_<KEY>` (e.g. `GRAPHSENTRY_KAFKA_BOOTSTRAP=broker:9092`,
`GRAPHSENTRY_METRICS_PORT=9200`). Environment values are typed by the schema below; lists and
mappings take JSON (`GRAPHSENTRY_ALERTS_SINKS='[{"type": "jsonl", "path": "a.jsonl"}]'`, a list of
strings also `a,b`); `null`, `none` or an empty value is null where a key may be null.

Every level is checked: an unknown section, key or alert-sink key, a wrong type, or a value out of
range is an error, one line per problem, naming the dotted path, the bad value and the valid keys,
e.g. `unknown key 'pth' in alerts.sinks[0] (type sqlite) (did you mean 'path'?); valid keys:
path, required, type`. `graphsentry serve` then exits with status 2. Check a file without starting
anything: `graphsentry serve --config FILE --print-config` (prints the effective config, secrets
shown as `***`) or `python -m detector.daemon.config FILE`.

Durations are seconds unless the key says `_ms`.
"""


_REFERENCE_EXAMPLE = """\
## Example

A Kafka deployment (deploy/graphsentry.yaml is a commented one; a test loads every config shipped
in the repository, this one included):

```yaml
source: {type: kafka, kind: flows}
kafka:
  bootstrap: kafka-1:9092,kafka-2:9092
  topic: graphsentry-flows
  group_id: graphsentry
  security_protocol: SASL_SSL
  sasl_mechanism: SCRAM-SHA-512
  sasl_plain_username: graphsentry      # the password: GRAPHSENTRY_KAFKA_SASL_PLAIN_PASSWORD
  ssl_cafile: /etc/graphsentry/ca.pem
model: {path: /var/lib/graphsentry/models/current, watch: true}
alerts:
  sinks:
    - {type: kafka, topic: graphsentry-alerts}
    - {type: sqlite, path: /var/lib/graphsentry/alerts.db}
    - {type: alertmanager, url: "http://alertmanager:9093"}
metrics: {host: 0.0.0.0, port: 9109}
log: {format: json}
pipeline: {progress_interval: 60}
```
"""


def reference_markdown() -> str:
    """The config reference (docs/configuration.md), generated from the schema."""
    out = [_REFERENCE_HEAD]
    for name, model in SECTIONS.items():
        out.append(f"## `{name}`\n")
        out.append((model.__doc__ or "").strip() + "\n")
        out.extend(_table(model, f"{name}."))
        out.append("")
    out.append("## Alert sinks (`alerts.sinks[]`)\n")
    out.append("Each entry is a mapping with a `type`; its other keys depend on the type and an unknown one "
               "is an error. `required` sinks must flush before Kafka offsets are committed.\n")
    for tag, model in SINKS.items():
        out.append(f"### `type: {tag}`\n")
        out.append((model.__doc__ or "").strip() + "\n")
        out.extend(_table(model, ""))
        out.append("")
    out.append("Cross-checks: `source.type: file` needs `source.paths`; `archive.enabled` needs `archive.path`; "
               "`kafka.heartbeat_interval_ms` must be lower than `kafka.session_timeout_ms`.\n")
    out.append(_REFERENCE_EXAMPLE)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m detector.daemon.config",
                                 description="Check daemon config files, or print the config reference.")
    ap.add_argument("files", nargs="*", help="config files to check (YAML or TOML)")
    ap.add_argument("--reference", action="store_true", help="print the reference (docs/configuration.md)")
    args = ap.parse_args(argv)
    if args.reference:
        sys.stdout.write(reference_markdown())
        return 0
    rc = 0
    for f in args.files:
        try:
            load_config(f, env={})
            print(f"{f}: ok")
        except (ValueError, OSError) as exc:
            print(str(exc) if isinstance(exc, ValueError) else f"{f}: {exc.strerror or exc}", file=sys.stderr)
            rc = 2
    return rc


if __name__ == "__main__":
    raise SystemExit(main())

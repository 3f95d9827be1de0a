"""Kafka I/O for the streaming daemon: message codecs, consumer source, producer, dead-letter topic.

Two message formats travel on a flow topic:

* ``json``  — one flow record per message, a JSON object with canonical field names
  (what Zeek's Kafka writer, goflow2 or pmacct publish, after a field mapping). ``ts`` is
  epoch seconds (number) or an ISO-8601 string.
* ``arrow`` — one Arrow IPC *stream* per message holding one record batch with canonical
  columns (any subset that includes the required ones). Many records per message is how
  kafka-python goes fast: its per-message overhead caps it near 14k messages/s.

``auto`` tells them apart per message: an Arrow IPC stream starts with the 0xFFFFFFFF
continuation marker, a JSON object with ``{``.

Partition keying: :func:`replay` (``graphsentry replay``) keys JSON messages by ``src_ip`` and
sends Arrow batches grouped by the partition that key hashes to (kafka-python's murmur2
partitioner), so every flow of one source endpoint lands in one partition. See README.md (The detection daemon).

The consumer is not thread-safe (kafka-python); :class:`KafkaSource` therefore owns it in one
thread, which polls, decodes, pauses/resumes for backpressure and commits the offsets that the
processing side reports as durable through an :class:`OffsetTracker`. Each decoded chunk it hands on
(:class:`SourceBatch`) carries every record's message offset and index in the message
(:mod:`ingest.kafka_positions`), which the archive needs.
"""
from __future__ import annotations

import bisect
import io
import json
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from ingest.kafka_positions import decode_positions
from ingest.schema import FLOW_SCHEMA, TX_SCHEMA, conform

log = logging.getLogger(__name__)

ARROW_MAGIC = b"\xff\xff\xff\xff"
FORMATS = ("json", "arrow", "auto")
# Keys of a config mapping that kafka-python accepts for security; passed through unchanged.
SECURITY_KEYS = (
    "security_protocol", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password",
    "sasl_kerberos_service_name", "sasl_oauth_token_provider", "ssl_cafile", "ssl_certfile",
    "ssl_keyfile", "ssl_password", "ssl_check_hostname", "ssl_crlfile",
)


# --------------------------------------------------------------------------------------------
# codecs


def _ts_seconds(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, datetime):
        return v.timestamp()
    if isinstance(v, (int, float)):
        return float(v)
    return None


def table_to_json_messages(table: pa.Table) -> list[bytes]:
    """One JSON object per row; ``ts`` becomes epoch seconds (float), like Zeek's Kafka writer."""
    out = []
    cols = table.column_names
    ts_idx = cols.index("ts") if "ts" in cols else -1
    ts_vals = None
    if ts_idx >= 0:
        ts_vals = (table.column("ts").cast(pa.int64()).to_numpy(zero_copy_only=False) / 1e6).tolist()
    pylists = {c: table.column(c).to_pylist() for c in cols if c != "ts"}
    for i in range(table.num_rows):
        rec = {c: pylists[c][i] for c in pylists if pylists[c][i] is not None}
        if ts_vals is not None:
            rec["ts"] = ts_vals[i]
        out.append(json.dumps(rec, separators=(",", ":")).encode())
    return out


def encode_arrow(table: pa.Table | pa.RecordBatch) -> bytes:
    """One Arrow IPC stream (schema + batches) as bytes."""
    sink = io.BytesIO()
    with ipc.new_stream(sink, table.schema) as w:
        if isinstance(table, pa.RecordBatch):
            w.write_batch(table)
        else:
            w.write_table(table)
    return sink.getvalue()


def decode_arrow(raw: bytes) -> pa.Table:
    """Inverse of :func:`encode_arrow`; raises on anything that is not an Arrow IPC stream."""
    with ipc.open_stream(pa.py_buffer(raw)) as r:
        return r.read_all()


def sniff_message(raw: bytes | None) -> str:
    """``"arrow"``, ``"json"`` or ``"unknown"`` for one message value."""
    if not raw:
        return "unknown"
    if raw[:4] == ARROW_MAGIC:
        return "arrow"
    head = raw[:64].lstrip()
    if head[:1] == b"{":
        return "json"
    return "unknown"


def _parse_ts(v: Any) -> int | None:
    """Microseconds since the epoch from seconds (number) or an ISO-8601 string; None if unusable."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        if not math.isfinite(v):
            return None
        return int(round(float(v) * 1e6))
    if isinstance(v, str):
        try:
            d = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            try:
                return int(round(float(v) * 1e6))
            except ValueError:
                return None
        if d.tzinfo is None:
            d = d.replace(tzinfo=timezone.utc)
        return int(round(d.timestamp() * 1e6))
    return None


def normalise_records(records: list[dict], kind: str, dead_letter: Any = None, source: str = "kafka") -> pa.Table:
    """Dicts with canonical field names -> a canonical table (``row`` = the record's own ``row`` or -1).

    Records missing a required field, with an unusable ``ts`` or a value of the wrong type go to
    ``dead_letter`` (``.add(source, line, reason, raw)``) and are left out. This is the daemon's own
    normaliser; the readers' ``records_to_batch`` is preferred when present (:func:`records_to_table`).
    """
    schema = TX_SCHEMA if kind == "transactions" else FLOW_SCHEMA
    required = [f.name for f in schema if not f.nullable and f.name != "row"]
    cols: dict[str, list] = {f.name: [] for f in schema}
    for i, rec in enumerate(records):
        reason = None
        if not isinstance(rec, dict):
            reason = "not_an_object"
        else:
            for name in required:
                if rec.get(name) in (None, ""):
                    reason = f"missing_{name}"
                    break
        ts = None
        if reason is None:
            ts = _parse_ts(rec.get("ts"))
            if ts is None:
                reason = "bad_ts"
        if reason is None:
            row_vals = {}
            for f in schema:
                if f.name == "ts":
                    row_vals["ts"] = ts
                    continue
                v = rec.get(f.name)
                if f.name == "row":
                    v = v if isinstance(v, int) and not isinstance(v, bool) else -1
                elif v is not None:
                    try:
                        if pa.types.is_integer(f.type):
                            if isinstance(v, bool):
                                raise TypeError
                            v = int(v)
                        elif pa.types.is_floating(f.type):
                            v = float(v)
                        elif pa.types.is_string(f.type):
                            v = str(v)
                    except (TypeError, ValueError):
                        reason = f"bad_{f.name}"
                        break
                row_vals[f.name] = v
        if reason is not None:
            if dead_letter is not None:
                dead_letter.add(source, i, reason, json.dumps(rec, default=str)[:4096])
            continue
        for k, v in row_vals.items():
            cols[k].append(v)
    arrays = []
    for f in schema:
        if f.name == "ts":
            arrays.append(pa.array(cols["ts"], pa.int64()).cast(f.type))
        else:
            arrays.append(pa.array(cols[f.name], f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _json_schema(schema: pa.Schema) -> pa.Schema:
    """The canonical schema with ``ts`` as float seconds (how JSON carries it), all nullable."""
    return pa.schema([pa.field(f.name, pa.float64() if f.name == "ts" else f.type) for f in schema])


def _fast_table(records: list[dict], kind: str) -> pa.Table | None:
    """Columnar conversion in Arrow's C++ (``from_pylist``) for well-formed records; None if any
    record needs the careful per-record path (a wrong type, a string timestamp, a missing field)."""
    schema = TX_SCHEMA if kind == "transactions" else FLOW_SCHEMA
    try:
        t = pa.Table.from_pylist(records, schema=_json_schema(schema))
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return None
    return _finish_fast(t, schema)


def _fast_json_bytes(values: list[bytes], kind: str) -> pa.Table | None:
    """Parse many one-line JSON messages at once with Arrow's JSON reader (C++); None -> slow path."""
    schema = TX_SCHEMA if kind == "transactions" else FLOW_SCHEMA
    if any(b"\n" in v for v in values):
        return None
    import pyarrow.json as pajson

    try:
        t = pajson.read_json(
            io.BytesIO(b"\n".join(values)),
            read_options=pajson.ReadOptions(block_size=max(1 << 20, 2 * sum(map(len, values)))),
            parse_options=pajson.ParseOptions(explicit_schema=_json_schema(schema), unexpected_field_behavior="ignore"),
        )
    except (pa.ArrowException, ValueError, TypeError):
        return None
    if t.num_rows != len(values):
        return None
    return _finish_fast(t, schema)


def _finish_fast(t: pa.Table, schema: pa.Schema) -> pa.Table | None:
    for f in schema:
        if not f.nullable and f.name != "row" and t.column(f.name).null_count:
            return None
    ts = t.column("ts")
    if ts.null_count or not pc.all(pc.is_finite(ts)).as_py():
        return None
    row = t.column("row")
    if row.null_count:
        row = pc.fill_null(row, -1)
    cols = []
    for f in schema:
        if f.name == "ts":
            cols.append(pc.cast(pc.round(pc.multiply(ts, 1e6)), pa.int64()).cast(f.type))
        elif f.name == "row":
            cols.append(row.cast(pa.int64()))
        elif f.name == "proto":
            cols.append(pc.utf8_lower(t.column("proto")))
        else:
            cols.append(t.column(f.name))
    return pa.Table.from_arrays(cols, schema=schema)


def records_to_table(records: list[dict], kind: str, dead_letter: Any = None) -> pa.Table:
    """Canonical table from JSON records, keeping each record's own ``row`` (-1 when absent).

    Fast path: all records well-formed -> one columnar conversion. Otherwise each record is
    checked on its own and the bad ones are dead-lettered with a reason (missing_<field>,
    bad_ts, bad_<field>).
    """
    fast = _fast_table(records, kind)
    if fast is not None:
        return fast
    return normalise_records(records, kind, dead_letter)


@dataclass
class Decoded:
    """What one poll's messages of one partition decode to."""

    table: pa.Table
    malformed: dict[str, int] = field(default_factory=dict)


def decode_messages(
    values: Iterable[bytes | None], fmt: str, kind: str, dead_letter: Any = None, source: str = "kafka",
) -> Decoded:
    """Decode message values (JSON-per-record and/or Arrow IPC) into one canonical table.

    Undecodable messages are dead-lettered with a reason (``bad_json``, ``bad_arrow``,
    ``unknown_format``, ``schema``) and counted; they never raise.
    """
    schema = TX_SCHEMA if kind == "transactions" else FLOW_SCHEMA
    malformed: dict[str, int] = {}
    json_recs: list[dict] = []
    tables: list[pa.Table] = []

    class _Counting:
        # Count record-level rejects from the normaliser too, then forward to the real sink.
        def add(self, src: str, line: Any, reason: str, raw: Any) -> None:
            malformed[reason] = malformed.get(reason, 0) + 1
            if dead_letter is not None:
                dead_letter.add(src, line, reason, raw)

    counting = _Counting()
    values = list(values)
    if fmt in ("json", "auto") and values and all(v is not None and v[:1] == b"{" for v in values):
        fast = _fast_json_bytes(values, kind)   # the common case: a poll of well-formed JSON records
        if fast is not None:
            return Decoded(fast, malformed)
    for i, raw in enumerate(values):
        kindm = sniff_message(raw) if fmt == "auto" else fmt
        if kindm == "json":
            try:
                rec = json.loads(raw)
                if not isinstance(rec, dict):
                    raise ValueError("not an object")
                json_recs.append(rec)
            except (ValueError, UnicodeDecodeError, TypeError):
                counting.add(source, i, "bad_json", _raw_text(raw))
        elif kindm == "arrow":
            try:
                t = decode_arrow(raw)
                t = conform(t, schema) if "row" in t.column_names else _conform_norow(t, schema)
                tables.append(t)
            except (pa.ArrowException, ValueError, TypeError, OSError) as exc:
                counting.add(source, i, "bad_arrow", f"{type(exc).__name__}: {exc}"[:512])
        else:
            counting.add(source, i, "unknown_format", _raw_text(raw))
    if json_recs:
        tables.append(records_to_table(json_recs, kind, counting))
    if not tables:
        return Decoded(schema.empty_table(), malformed)
    tables = [_as_schema(t, schema) for t in tables]
    t = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    return Decoded(t, malformed)


def _as_schema(t: pa.Table, schema: pa.Schema) -> pa.Table:
    """Same columns, exactly ``schema`` (nullability/metadata differ between producers of tables)."""
    if t.schema.equals(schema):
        return t
    return pa.Table.from_arrays([t.column(f.name).cast(f.type) for f in schema], schema=schema)


def _conform_norow(t: pa.Table, schema: pa.Schema) -> pa.Table:
    t = t.append_column("row", pa.array(np.full(t.num_rows, -1, dtype=np.int64)))
    return conform(t, schema)


def _raw_text(raw: bytes | None) -> str:
    if raw is None:
        return ""
    return raw[:4096].decode("utf-8", "replace")


# --------------------------------------------------------------------------------------------
# clients


def client_options(cfg: dict[str, Any]) -> dict[str, Any]:
    """kafka-python keyword options from a config mapping: bootstrap + security passthrough + extras.

    A client gives up bootstrapping after ``kafka.connect_timeout_s`` (default 5 s) instead of
    kafka-python's 30 s, so callers notice an absent broker soon and can say so (and retry).
    """
    opts: dict[str, Any] = {"bootstrap_servers": cfg["bootstrap"]}
    for k in SECURITY_KEYS:
        if cfg.get(k) not in (None, ""):
            opts[k] = cfg[k]
    opts["bootstrap_timeout_ms"] = int(float(cfg.get("connect_timeout_s") or 5.0) * 1000)
    opts.update(cfg.get("client_options") or {})
    return opts


def make_producer(cfg: dict[str, Any], **extra: Any):
    """A kafka-python producer with acks=all (alerts and dead letters must be durable).

    ``send`` blocks at most 10 s for topic metadata (kafka-python's default is 60 s), so a
    thread that sends while the broker is away gets an error it can report and retry.
    """
    from kafka import KafkaProducer

    opts = client_options(cfg)
    opts.setdefault("acks", "all")
    opts.setdefault("linger_ms", 5)
    opts.setdefault("retries", 5)
    opts.setdefault("max_block_ms", 10000)
    opts.update(extra)
    return KafkaProducer(**opts)


def ensure_topics(bootstrap: str, topics: dict[str, int], cfg: dict[str, Any] | None = None) -> None:
    """Create topics (name -> partitions) that do not exist yet; ignores 'already exists'."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    opts = client_options({**(cfg or {}), "bootstrap": bootstrap})
    admin = KafkaAdminClient(**opts)
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(t, n, 1) for t, n in topics.items() if t not in existing]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


# --------------------------------------------------------------------------------------------
# broker availability: waiting, retrying, saying so


class KafkaUnavailable(RuntimeError):
    """The broker did not answer or did not acknowledge in time; the operation may be retried."""


class StoppedWaiting(Exception):
    """A stop was requested while waiting for the broker."""


def probe(bootstrap: str, timeout: float = 2.0) -> str | None:
    """None when some bootstrap server accepts a TCP connection, else why not (one line)."""
    import socket

    reasons = []
    for hp in str(bootstrap).split(","):
        hp = hp.strip()
        host, _, port = hp.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout):
                return None
        except (OSError, ValueError) as exc:
            why = str(getattr(exc, "strerror", None) or exc)
            reasons.append(f"{hp}: {why[:1].lower() + why[1:]}")
    if len(reasons) == 1:
        return reasons[0].split(": ", 1)[1]
    return "; ".join(reasons) or "no bootstrap servers"


def describe_error(exc: BaseException, bootstrap: str | None = None) -> str:
    """A one-line reason for a Kafka failure (the TCP view first when the broker is not listening)."""
    if bootstrap and not isinstance(exc, KafkaUnavailable):
        why = probe(bootstrap, timeout=1.0)
        if why:
            return why
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    if isinstance(exc, KafkaUnavailable):
        return text or name
    return f"{name}: {text}" if text and not text.startswith(name) else (text or name)


def kafka_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "Kafka is not there (yet)": retry them."""
    from kafka.errors import KafkaError

    errs: tuple[type[BaseException], ...] = (KafkaError, KafkaUnavailable, OSError)
    try:
        from confluent_kafka import KafkaException

        errs += (KafkaException,)
    except ImportError:
        pass
    return errs


class Backoff:
    """Capped exponential backoff: first, 2*first, ... up to cap; :meth:`reset` starts over."""

    def __init__(self, first: float = 1.0, cap: float = 30.0) -> None:
        self.first, self.cap = float(first), float(cap)
        self._next = self.first

    def next(self) -> float:
        d = self._next
        self._next = min(self._next * 2, self.cap)
        return d

    def reset(self) -> None:
        self._next = self.first


class BrokerHealth:
    """Which parts of a daemon wait for Kafka (consumer, alert sink, dead-letter producer, setup).

    Drives the ``graphsentry_broker_up`` gauge (1 when no part waits), counts reconnections
    (``graphsentry_broker_reconnects_total``: all parts back after an outage) and writes the log
    lines: WARNING ``waiting for Kafka at HOST:PORT (topic T): REASON; retry in Ns`` while a part
    waits, INFO ``Kafka at HOST:PORT is back ...`` when it recovers.
    """

    def __init__(self, bootstrap: str, metrics: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.bootstrap, self.metrics, self.clock = bootstrap, metrics, clock
        self._lock = threading.Lock()
        self._down: dict[str, float] = {}   # part -> since (monotonic)
        self._ever_up = False
        self.reconnects = 0
        self._set_gauge(0)

    def _set_gauge(self, v: int) -> None:
        if self.metrics is not None and hasattr(self.metrics, "broker_up"):
            self.metrics.broker_up.set(v)

    @property
    def is_up(self) -> bool:
        with self._lock:
            return self._ever_up and not self._down

    def waiting(self) -> dict[str, float]:
        """part -> seconds it has been waiting."""
        now = self.clock()
        with self._lock:
            return {p: now - t for p, t in self._down.items()}

    def down(self, part: str, topic: str | None, reason: str, retry_in: float | None) -> None:
        with self._lock:
            first = part not in self._down
            self._down.setdefault(part, self.clock())
        self._set_gauge(0)
        where = f" (topic {topic})" if topic else ""
        retry = f"; retry in {retry_in:g}s" if retry_in is not None else ""
        log.warning("waiting for Kafka at %s%s: %s%s", self.bootstrap, where, reason, retry,
                    extra={"event": "broker_down" if first else "broker_waiting", "part": part,
                           "bootstrap": self.bootstrap, "topic": topic, "reason": reason, "retry_in_s": retry_in})

    def up(self, part: str) -> None:
        with self._lock:
            since = self._down.pop(part, None)
            all_up = not self._down
            was_up = self._ever_up
            self._ever_up = self._ever_up or all_up
        if since is not None:
            log.info("Kafka at %s is back for the %s after %.1f s of waiting; resuming", self.bootstrap, part,
                     self.clock() - since, extra={"event": "broker_up", "part": part, "bootstrap": self.bootstrap,
                                                  "waited_s": round(self.clock() - since, 3)})
        if all_up:
            self._set_gauge(1)
            if since is not None and was_up:
                self.reconnects += 1
                if self.metrics is not None and hasattr(self.metrics, "broker_reconnects"):
                    self.metrics.broker_reconnects.inc()


def retry_kafka(fn: Callable[[], Any], health: BrokerHealth | None, part: str, topic: str | None,
                stop: threading.Event | None = None, first: float = 1.0, cap: float = 30.0,
                bootstrap: str | None = None) -> Any:
    """``fn()`` until it does not raise a Kafka/connection error, waiting with capped exponential
    backoff in between and reporting to ``health``; raises :class:`StoppedWaiting` on ``stop``."""
    errors = kafka_errors()
    b = Backoff(first, cap)
    bs = bootstrap or (health.bootstrap if health is not None else None)
    while True:
        if stop is not None and stop.is_set():
            raise StoppedWaiting(part)
        try:
            out = _attempt(fn, bs)
        except errors as exc:
            if stop is not None and stop.is_set():
                raise StoppedWaiting(part) from exc
            d = b.next()
            reason = describe_error(exc, bs)
            if health is not None:
                health.down(part, topic, reason, d)
            else:
                log.warning("waiting for Kafka at %s%s: %s; retry in %.0fs", bs, f" (topic {topic})" if topic else "",
                            reason, d)
            if stop is not None:
                if stop.wait(d):
                    raise StoppedWaiting(part) from exc
            else:
                time.sleep(d)
            continue
        if health is not None:
            health.up(part)
        return out


def _attempt(fn: Callable[[], Any], bootstrap: str | None) -> Any:
    """``fn()``, unless nothing listens on the bootstrap servers: then fail at once (a client would
    spend its whole connect timeout finding that out) with the connection's own reason."""
    if bootstrap:
        why = probe(bootstrap, timeout=1.0)
        if why and "refused" in why.lower():
            raise KafkaUnavailable(why)
    return fn()


class AckedProducer:
    """Producer sends that end acknowledged exactly once (as far as the client can tell).

    :meth:`send` never blocks long and never raises for an absent broker: what could not be handed
    to the client waits here. :meth:`flush` waits up to ``flush_timeout`` for every acknowledgement;
    messages the broker refused or that expired are sent again (only those), and it raises
    :class:`KafkaUnavailable` while anything is unacknowledged — calling ``flush`` again later
    continues where it stopped, without re-sending what is merely in flight.
    """

    def __init__(self, producer, bootstrap: str = "", flush_timeout: float = 10.0) -> None:
        self.producer, self.bootstrap, self.flush_timeout = producer, bootstrap, float(flush_timeout)
        self._inflight: list[tuple[tuple, Any]] = []
        self._unsent: list[tuple] = []
        self._last_error: BaseException | None = None

    @property
    def pending(self) -> int:
        return len(self._inflight) + len(self._unsent)

    def send(self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None) -> None:
        msg = (topic, value, key, partition)
        try:
            fut = self.producer.send(topic, value=value, key=key, partition=partition)
        except kafka_errors() as exc:
            self._unsent.append(msg)
            self._last_error = exc
            return
        self._inflight.append((msg, fut))

    def flush(self) -> None:
        if not self._inflight and not self._unsent:
            return
        unsent, self._unsent = self._unsent, []
        for i, m in enumerate(unsent):
            self.send(*m)
            if self._unsent:  # still no broker: keep the rest for the next flush, in order
                self._unsent.extend(unsent[i + 1:])
                raise KafkaUnavailable(f"{len(self._unsent)} messages not sent yet "
                                       f"({describe_error(self._last_error, self.bootstrap)})")
        try:
            self.producer.flush(timeout=self.flush_timeout)
        except kafka_errors() as exc:
            raise KafkaUnavailable(f"{len(self._inflight)} messages not acknowledged within "
                                   f"{self.flush_timeout:.0f}s ({describe_error(exc, self.bootstrap)})") from exc
        still, failed = [], []
        for m, f in self._inflight:
            if not f.is_done:
                still.append((m, f))
            elif f.failed():
                failed.append(m)
                self._last_error = f.exception
        self._inflight = still
        for m in failed:  # refused or expired: the broker does not have them, send again
            self.send(*m)
        if failed or still:
            raise KafkaUnavailable(f"{len(failed)} messages refused, {len(still)} still in flight "
                                   f"({describe_error(self._last_error or KafkaUnavailable('timeout'), self.bootstrap)}); "
                                   "they are sent again")

    def close(self, timeout: float = 10.0) -> None:
        try:
            self.producer.close(timeout=timeout)
        except Exception:  # noqa: BLE001
            pass


def partition_for(key: bytes, n_partitions: int) -> int:
    """The partition kafka-python's default partitioner picks for ``key`` (murmur2, positive)."""
    from kafka.partitioner.default import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % n_partitions


class KafkaDeadLetter:
    """Dead-letter sink on a Kafka topic with the DeadLetter interface (``add``/``counts``/``close``).

    Each message is JSON: ``{source, line, reason, raw, ts}``; ``flush()`` waits for the acks so the
    daemon can commit offsets of the bad messages only after they are safely dead-lettered (it raises
    :class:`KafkaUnavailable` while some are not; a later flush re-sends only those).
    """

    def __init__(self, producer, topic: str, on_add: Callable[[str], None] | None = None,
                 bootstrap: str = "", flush_timeout: float = 2.0) -> None:
        self.producer, self.topic = producer, topic
        self._acked = AckedProducer(producer, bootstrap, flush_timeout)
        self.counts: dict[str, int] = {}
        self._on_add = on_add
        self._logged = 0

    def add(self, source: str, line: Any, reason: str, raw: Any) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if self._logged < 5:  # the first few, then only counts: a flood of garbage must not flood logs
            log.warning("dead-letter %s: %s (line %s)%s", reason, source, line,
                        "; further dead letters are only counted (graphsentry_dead_letter_total)"
                        if self._logged == 4 else "",
                        extra={"event": "dead_letter", "reason": reason, "source": source})
            self._logged += 1
        if self._on_add:
            self._on_add(reason)
        msg = {"source": source, "line": line, "reason": reason, "raw": raw, "ts": time.time()}
        self._acked.send(self.topic, json.dumps(msg, default=str).encode())

    @property
    def pending(self) -> int:
        return self._acked.pending

    def flush(self) -> None:
        self._acked.flush()

    def close(self) -> None:
        try:
            self._acked.flush()
        finally:
            self._acked.close()


# --------------------------------------------------------------------------------------------
# offset tracking


@dataclass
class _Chunk:
    topic: str
    partition: int
    first: int          # first offset in the chunk
    last: int           # last offset in the chunk
    row_start: int      # daemon-local row range [row_start, row_end)
    row_end: int
    remaining: int


class OffsetTracker:
    """Which offsets may be committed: those whose every record's alerts are durably written.

    The source registers each decoded chunk (a poll's messages of one partition) with the range of
    daemon-local rows it became; the pipeline calls :meth:`done_rows` after the sinks flushed a
    window (and for late records). A partition's committable offset is the first offset of its
    oldest unfinished chunk, or one past the last finished one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._starts: list[int] = []
        self._chunks: list[_Chunk] = []
        self._by_tp: dict[tuple[str, int], list[_Chunk]] = {}
        self._done_upto: dict[tuple[str, int], int] = {}

    def add(self, topic: str, partition: int, first: int, last: int, row_start: int, row_end: int) -> None:
        c = _Chunk(topic, partition, first, last, row_start, row_end, row_end - row_start)
        with self._lock:
            self._by_tp.setdefault((topic, partition), []).append(c)
            if c.remaining > 0:
                self._starts.append(row_start)
                self._chunks.append(c)

    def done_rows(self, rows: np.ndarray) -> None:
        if len(rows) == 0:
            return
        rows = np.asarray(rows, dtype=np.int64)
        with self._lock:
            if not self._chunks:
                return
            idx = np.searchsorted(np.asarray(self._starts, dtype=np.int64), rows, side="right") - 1
            ok = idx >= 0
            counts = np.bincount(idx[ok], minlength=len(self._chunks))
            keep_s, keep_c = [], []
            for c, s, n in zip(self._chunks, self._starts, counts):
                if n:
                    c.remaining -= int(n)
                if c.remaining > 0:
                    keep_s.append(s)
                    keep_c.append(c)
            self._starts, self._chunks = keep_s, keep_c

    def committable(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> next offset to consume, for partitions that advanced."""
        out = {}
        with self._lock:
            for tp, chunks in self._by_tp.items():
                n = 0
                while n < len(chunks) and chunks[n].remaining <= 0:
                    n += 1
                if n:
                    self._done_upto[tp] = chunks[n - 1].last + 1
                    del chunks[:n]
                if tp in self._done_upto:
                    out[tp] = self._done_upto[tp]
        return out

    def forget(self, tps: Iterable[tuple[str, int]]) -> None:
        """Drop state of partitions that were revoked (their new owner re-reads from the last commit)."""
        with self._lock:
            for tp in tps:
                self._by_tp.pop(tp, None)
                self._done_upto.pop(tp, None)

    def pending(self) -> int:
        with self._lock:
            return sum(c.remaining for c in self._chunks)


# --------------------------------------------------------------------------------------------
# the consumer source


@dataclass
class SourceBatch:
    """A decoded chunk handed to the pipeline: canonical table + where it came from."""

    table: pa.Table
    source: str
    arrival: float                       # wall time the chunk was read (or the producer's timestamp)
    topic: str | None = None
    partition: int | None = None
    first_offset: int | None = None
    last_offset: int | None = None
    # each row's message offset and index inside the message (Kafka; ingest.kafka_positions), else None
    offsets: np.ndarray | None = None
    indexes: np.ndarray | None = None


class KafkaSource:
    """Consumer-group source: poll -> decode -> bounded queue, with manual commits and pause/resume.

    ``out`` is a bounded ``queue.Queue``; when it is at ``high_water`` items the source pauses all
    assigned partitions (it keeps polling, so group heartbeats continue) and resumes at
    ``low_water``: memory stays flat when scoring falls behind. Offsets come from ``tracker``.
    """

    def __init__(
        self, cfg: dict[str, Any], out: "queue.Queue[SourceBatch | None]", tracker: OffsetTracker,
        metrics=None, dead_letter: Any = None, kind: str = "flows", fmt: str = "auto",
        stop_at_end: bool = False, commit_interval: float = 1.0, on_assign: Callable[[], None] | None = None,
        health: BrokerHealth | None = None, backoff_cap: float = 30.0,
    ) -> None:
        self.cfg, self.out, self.tracker, self.metrics = cfg, out, tracker, metrics
        self.dead_letter, self.kind, self.fmt = dead_letter, kind, fmt
        self.stop_at_end, self.commit_interval = stop_at_end, commit_interval
        self.topic = cfg["topic"]
        self.high_water = max(1, int(out.maxsize * 0.8)) if out.maxsize else 1 << 30
        self.low_water = max(0, int(out.maxsize * 0.3)) if out.maxsize else 0
        self.max_poll_records = int(cfg.get("max_poll_records") or 500)
        self._stop = threading.Event()
        self._stop_reading = threading.Event()
        self._eos_sent = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run_guarded, name="kafka-source", daemon=True)
        self._paused = False
        self._last_commit: dict[tuple[str, int], int] = {}
        self._committed_log: dict[tuple[str, int], int] = {}
        self._on_assign = on_assign
        self.assigned: set[tuple[str, int]] = set()
        # (first, last) offset handed on per partition: what stop_at_end logs as read
        self.handed: dict[tuple[str, int], tuple[int, int]] = {}
        self.error: BaseException | None = None
        self.reconnects = 0
        self.health = health
        self.backoff_cap = float(backoff_cap)
        self._broker_down_since: float | None = None   # monotonic time the broker went missing
        self._unhealthy_since: float | None = None     # first failed check of the current streak
        self._down_backoff = Backoff(1.0, self.backoff_cap)
        self._next_down_log = 0.0
        self._revoked_pending: set[tuple[str, int]] = set()
        self._assign_seen = False
        self.redelivered_dropped = 0  # re-delivered messages already held in memory (not handed on twice)
        self.pauses = 0  # times the partitions were paused for backpressure
        self.max_depth = 0
        self.consumer = None

    # lifecycle ---------------------------------------------------------------------------
    def start(self) -> "KafkaSource":
        self._thread.start()
        return self

    def stop_reading(self) -> None:
        """Stop polling new records (drain starts); the thread keeps committing until :meth:`stop`."""
        self._stop_reading.set()

    def stop(self) -> None:
        """Final commit of what is durable, close the consumer, end the thread."""
        self._stop_reading.set()
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    # internals ---------------------------------------------------------------------------
    def _make_consumer(self):
        from kafka import ConsumerRebalanceListener, KafkaConsumer

        src = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                # Forget partitions we lose: records still in our windows are re-read by the new owner
                # from the last commit (at-least-once). No commit here: kafka-python 3 runs this
                # callback on its IO thread, where a blocking commit is refused; the periodic commits
                # (commit_interval) keep the re-read small.
                tps = {(tp.topic, tp.partition) for tp in revoked}
                src._on_revoked(tps)

            def on_partitions_assigned(self, assigned):
                src._on_assigned({(tp.topic, tp.partition) for tp in assigned})

        opts = client_options(self.cfg)
        opts.update(
            group_id=self.cfg.get("group_id", "graphsentry"),
            enable_auto_commit=False,
            auto_offset_reset=self.cfg.get("auto_offset_reset", "earliest"),
            max_poll_records=self.max_poll_records,
            session_timeout_ms=int(self.cfg.get("session_timeout_ms", 10000)),
            heartbeat_interval_ms=int(self.cfg.get("heartbeat_interval_ms", 3000)),
            max_partition_fetch_bytes=int(self.cfg.get("max_partition_fetch_bytes", 8388608)),
            reconnect_backoff_max_ms=int(self.cfg.get("reconnect_backoff_max_ms", 2000)),
            request_timeout_ms=int(self.cfg.get("request_timeout_ms", 30000)),
        )
        c = KafkaConsumer(**opts)
        c.subscribe([self.topic], listener=Listener())
        return c

    # rebalances -------------------------------------------------------------------------
    def _on_revoked(self, tps: set[tuple[str, int]]) -> None:
        """A partition taken away may come straight back (a broker restart makes the group rejoin):
        its state is kept until the next assignment shows whether it did (:meth:`_settle_rebalance`)."""
        self._revoked_pending |= tps
        self._assign_seen = False  # settle once the assignment that follows this revocation came
        self.assigned -= tps
        log.info("partitions revoked: %s", sorted(tps), extra={"event": "partitions_revoked"})

    def _on_assigned(self, tps: set[tuple[str, int]]) -> None:
        self.assigned = set(tps)
        self._assign_seen = True
        log.info("partitions assigned: %s", sorted(self.assigned), extra={"event": "partitions_assigned"})
        if self._on_assign:
            self._on_assign()

    def _settle_rebalance(self) -> None:
        """After revoke+assign: forget partitions another member owns now; keep reading the ones that
        came back where this source stopped (records it holds are not read and scored twice)."""
        if not self._revoked_pending or not self._assign_seen:
            return
        revoked, self._revoked_pending, self._assign_seen = self._revoked_pending, set(), False
        lost = {tp for tp in revoked if tp not in self.assigned}
        for tp in revoked - lost:
            if tp not in self.handed:
                continue
            try:
                committed = self._committed(tp)
            except Exception as exc:  # noqa: BLE001 - unknown: behave as if the partition moved
                log.info("partition %s came back but its committed offset is unknown (%s); re-reading it", tp, exc)
                lost.add(tp)
                continue
            nxt = self.handed[tp][1] + 1
            # A commit of ours may have reached the broker although the call failed (the outage), so
            # anything up to what this source read is its own doing; beyond it, another member read
            # further in between: its view wins.
            if committed is not None and committed > nxt:
                lost.add(tp)
                continue
            try:
                self._seek(tp, nxt)
            except Exception as exc:  # noqa: BLE001 - the offset filter in the poll loop still drops re-reads
                log.debug("seek %s to %d failed: %s", tp, nxt, exc)
            log.info("partition %s/%d came back after a rebalance; continuing at offset %d", tp[0], tp[1], nxt)
        if lost:
            self.tracker.forget(lost)
            for tp in lost:
                self._last_commit.pop(tp, None)
                self.handed.pop(tp, None)

    # broker availability ----------------------------------------------------------------
    def _check_broker(self, now: float) -> bool:
        """True while the broker answers; reports transitions to ``health`` (logs, gauge)."""
        try:
            ok = self._broker_ok()
        except Exception:  # noqa: BLE001
            ok = False
        if ok:
            self._unhealthy_since = None
            if self._broker_down_since is not None:
                self._broker_down_since = None
                self._down_backoff.reset()
                self.reconnects += 1
                if self.health is not None:
                    self.health.up("consumer")
                else:
                    log.info("Kafka at %s is back; resuming", self.cfg["bootstrap"])
            return True
        if self._unhealthy_since is None:
            self._unhealthy_since = now
        # the client rediscovers a coordinator by itself in well under 2 s; only longer is an outage
        if now - self._unhealthy_since < 2.0:
            return self._broker_down_since is None
        if self._broker_down_since is None:
            self._broker_down_since = now
            self._next_down_log = now
        if now >= self._next_down_log:
            d = self._down_backoff.next()
            self._next_down_log = now + d
            reason = probe(self.cfg["bootstrap"], timeout=1.0) or "group coordinator not reachable"
            if self.health is not None:
                self.health.down("consumer", self.topic, reason, d)
            else:
                log.warning("waiting for Kafka at %s (topic %s): %s; retry in %.0fs", self.cfg["bootstrap"],
                            self.topic, reason, d)
        return False

    @property
    def broker_up(self) -> bool:
        return self.consumer is not None and self._broker_down_since is None

    def _commit(self) -> None:
        """Commit every durable offset of an assigned partition that moved since the last commit."""
        todo = {tp: off for tp, off in self.tracker.committable().items()
                if tp in self.assigned and self._last_commit.get(tp) != off}
        if not todo or self.consumer is None:
            return
        if self.dead_letter is not None and hasattr(self.dead_letter, "flush"):
            try:
                self.dead_letter.flush()  # bad messages must be in the DLQ before their offsets are committed
            except Exception as exc:  # noqa: BLE001 - not committed now; the next commit tries again
                if self.health is not None:
                    self.health.down("dead-letter producer", getattr(self.dead_letter, "topic", None),
                                     describe_error(exc), self.commit_interval)
                else:
                    log.warning("dead letters not acknowledged (%s); offsets not committed yet", exc)
                return
            if self.health is not None and "dead-letter producer" in self.health.waiting():
                self.health.up("dead-letter producer")
        try:
            self._commit_offsets(todo)
            self._last_commit.update(todo)
            self._committed_log.update(todo)
            if self.metrics:
                self.metrics.commits.inc()
            log.debug("committed %s", {f"{t}/{p}": o for (t, p), o in todo.items()})
        except Exception as exc:  # noqa: BLE001 - a failed commit only means a later re-read
            log.warning("offset commit failed (%s); will retry", exc)

    def committed_offsets(self) -> dict[tuple[str, int], int]:
        """What this source last committed (for summaries and tests)."""
        return dict(self._committed_log)

    def _update_lag(self) -> bool:
        """Set the lag gauges; False when there was nothing to measure yet."""
        if not self.metrics or not self.assigned or self.consumer is None:
            return False
        try:
            positions = self._positions()
        except Exception:  # noqa: BLE001
            return False
        for (t, p), (pos, end) in positions.items():
            self.metrics.consumer_lag.labels(t, str(p)).set(max(0, end - max(pos, 0)))
        return True

    def _end_positions(self) -> dict[tuple[str, int], tuple[int, int]] | None:
        """``(position, end)`` per partition when every assigned one has been read to its end
        (``stop_at_end``), else None."""
        if not self.assigned or self.consumer is None:
            return None
        try:
            positions = self._positions()
        except Exception:  # noqa: BLE001
            return None
        # position < 0 (nothing consumed yet): at the end only if the partition is empty
        done = len(positions) == len(self.assigned) and all(max(p, 0) >= end for p, end in positions.values())
        return positions if done else None

    def _put(self, item: SourceBatch) -> None:
        # The queue is bounded; pausing keeps it from filling, but block briefly rather than drop.
        while not self._stop_reading.is_set():
            try:
                self.out.put(item, timeout=0.2)
                return
            except queue.Full:
                self._backpressure()
        # Draining: the batch is not handed on and its offsets are never committed (re-read later).

    def _backpressure(self) -> None:
        depth = self.out.qsize()
        self.max_depth = max(self.max_depth, depth)
        if self.metrics:
            self.metrics.queue_depth.labels("records").set(depth)
        if self.consumer is None:
            return
        if not self._paused and depth >= self.high_water:
            if self._pause_all():
                self._paused = True
                self.pauses += 1
                if self.metrics:
                    self.metrics.paused.set(1)
                log.debug("paused partitions (queue %d)", depth)
        elif self._paused and depth <= self.low_water:
            self._resume_all()
            self._paused = False
            if self.metrics:
                self.metrics.paused.set(0)

    def _end_of_stream(self) -> None:
        if not self._eos_sent:
            self._eos_sent = True
            while True:
                try:
                    self.out.put(None, timeout=0.5)
                    return
                except queue.Full:
                    if self._stop.is_set():
                        return

    def _run_guarded(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - surface to the pipeline instead of dying silently
            log.exception("kafka source failed")
            self.error = exc
        finally:
            self._done.set()
            self._end_of_stream()

    def _run(self) -> None:
        """The one poll loop of both backends: connect, poll -> decode -> queue, commit, lag, drain."""
        retryable = self._connect_errors()
        backoff = Backoff(1.0, self.backoff_cap)
        while not self._stop_reading.is_set() and self.consumer is None:
            try:
                self.consumer = _attempt(self._make_consumer, self.cfg["bootstrap"])
            except retryable + (KafkaUnavailable,) as exc:
                d = backoff.next()
                reason = describe_error(exc, self.cfg["bootstrap"])
                if self.health is not None:
                    self.health.down("consumer", self.topic, reason, d)
                else:
                    log.warning("waiting for Kafka at %s (topic %s): %s; retry in %.0fs", self.cfg["bootstrap"],
                                self.topic, reason, d)
                self._stop_reading.wait(d)
        if self.consumer is None:
            return
        if self.health is not None:
            self.health.up("consumer")
        next_check = time.monotonic()
        broker_ok = True
        next_commit = time.monotonic() + self.commit_interval
        next_lag = time.monotonic()
        idle_polls = 0
        while not self._stop.is_set():
            if self._stop_reading.is_set():
                self._end_of_stream()
                self._drain_tick()
            else:
                self._backpressure()
                mono = time.monotonic()
                if mono >= next_check:
                    broker_ok = self._check_broker(mono)
                    next_check = mono + 0.5
                try:
                    chunks = self._poll_chunks()
                except retryable as exc:
                    # Broker gone or a rebalance error: the client reconnects by itself on the next poll.
                    self.reconnects += 1
                    log.warning("poll failed (%s); retrying", exc)
                    self._stop.wait(0.5)
                    continue
                self._settle_rebalance()
                if chunks and not broker_ok:
                    broker_ok = self._check_broker(time.monotonic())
                now = time.time()
                for c in chunks:
                    if (c.topic, c.partition) not in self.assigned:
                        continue
                    c = self._drop_redelivered(c)
                    if c is None:
                        continue
                    offs = c.offsets if c.offsets is not None else range(c.first_offset, c.last_offset + 1)
                    dec, row_offs, row_idx = decode_positions(c.values, offs, self.fmt, self.kind, self.dead_letter,
                                                              source=f"kafka:{c.topic}/{c.partition}")
                    if self.metrics:
                        self.metrics.records.labels("kafka").inc(dec.table.num_rows)
                        for reason, n in dec.malformed.items():
                            self.metrics.malformed.labels(reason).inc(n)
                    # Event-to-alert starts when the producer sent the newest message of this chunk.
                    arrival = (c.max_ts_ms / 1000.0) if c.max_ts_ms > 0 else now
                    self._put(SourceBatch(dec.table, "kafka", min(arrival, now), c.topic, c.partition,
                                          c.first_offset, c.last_offset, row_offs, row_idx))
                    first, _ = self.handed.get((c.topic, c.partition), (c.first_offset, 0))
                    self.handed[(c.topic, c.partition)] = (first, c.last_offset)
                # A paused consumer gets nothing by design: that is not the end of the topic.
                idle_polls = 0 if chunks or self._paused else idle_polls + 1
                ends = self._end_positions() if self.stop_at_end and idle_polls >= 3 else None
                if ends is not None:
                    log.info("all assigned partitions read to the end (stop_at_end): read %s, (position, end) %s",
                             self.handed, ends)
                    self._stop_reading.set()
            mono = time.monotonic()
            if mono >= next_commit and broker_ok:  # a commit to an absent broker would only block
                self._commit()
                next_commit = mono + self.commit_interval
            if mono >= next_lag and not self._stop_reading.is_set() and broker_ok:
                # every 5 s once partitions are assigned; until then retry soon
                next_lag = mono + (5.0 if self._update_lag() else 0.5)
        # Final commit of everything durable, in this thread (the consumer is not thread-safe).
        if self._broker_down_since is None:
            self._commit()
        else:
            log.warning("Kafka at %s unreachable at shutdown: offsets not committed; a restart re-reads "
                        "from the last commit", self.cfg["bootstrap"])
        try:
            self._close()
        except Exception:  # noqa: BLE001
            pass

    def _drop_redelivered(self, c: "_Polled") -> "_Polled | None":
        """Messages at or below the last offset already handed on for this partition are held in
        memory (a re-fetch after a reconnect or a rebalance that gave the partition back): drop them."""
        h = self.handed.get((c.topic, c.partition))
        if h is None or c.first_offset > h[1]:
            return c
        offs = c.offsets if c.offsets is not None else list(range(c.first_offset, c.last_offset + 1))
        keep = [i for i, o in enumerate(offs) if o > h[1]]
        self.redelivered_dropped += len(offs) - len(keep)
        if not keep:
            return None
        return _Polled(c.topic, c.partition, [c.values[i] for i in keep], offs[keep[0]], offs[keep[-1]],
                       c.max_ts_ms, [offs[i] for i in keep])

    # backend adapter (kafka-python here; ConfluentSource overrides these) -------------------
    def _broker_ok(self) -> bool:
        """Whether the group coordinator is known and connected (kafka-python)."""
        coord = getattr(self.consumer, "_coordinator", None)
        if coord is None or not hasattr(coord, "coordinator_unknown"):
            return probe(self.cfg["bootstrap"], timeout=0.5) is None
        return not coord.coordinator_unknown()

    def _committed(self, tp: tuple[str, int]) -> int | None:
        from kafka.structs import TopicPartition

        return self.consumer.committed(TopicPartition(*tp), timeout_ms=5000)

    def _seek(self, tp: tuple[str, int], offset: int) -> None:
        from kafka.structs import TopicPartition

        self.consumer.seek(TopicPartition(*tp), offset)

    def _connect_errors(self) -> tuple[type[BaseException], ...]:
        from kafka.errors import KafkaError

        return (KafkaError,)

    def _poll_chunks(self) -> list["_Polled"]:
        polled = self.consumer.poll(timeout_ms=200, max_records=self.max_poll_records)
        return [_Polled(tp.topic, tp.partition, [m.value for m in msgs], msgs[0].offset, msgs[-1].offset,
                        max((m.timestamp or 0 for m in msgs), default=0), [m.offset for m in msgs])
                for tp, msgs in polled.items() if msgs]

    def _commit_offsets(self, todo: dict[tuple[str, int], int]) -> None:
        from kafka.structs import OffsetAndMetadata, TopicPartition

        self.consumer.commit({TopicPartition(*tp): OffsetAndMetadata(off, "", -1) for tp, off in todo.items()},
                             timeout_ms=5000)

    def _positions(self) -> dict[tuple[str, int], tuple[int, int]]:
        """(position, end offset) of every assigned partition."""
        from kafka.structs import TopicPartition

        tps = [TopicPartition(*tp) for tp in self.assigned]
        ends = self.consumer.end_offsets(tps, timeout_ms=2000)
        out = {}
        for tp in tps:
            try:
                pos = self.consumer.position(tp, timeout_ms=1000)
            except Exception:  # noqa: BLE001 - one slow partition does not hide the others
                continue
            if pos is not None:
                # Some brokers (Tansu 0.5) answer ListOffsets(latest) with the last batch's base
                # offset; the high watermark of the fetch responses is the true end.
                out[(tp.topic, tp.partition)] = (pos, max(ends.get(tp, pos), self.consumer.highwater(tp) or 0))
        return out

    def _pause_all(self) -> bool:
        parts = self.consumer.assignment()
        if parts:
            self.consumer.pause(*parts)
        return bool(parts)

    def _resume_all(self) -> None:
        paused = self.consumer.paused()
        if paused:
            self.consumer.resume(*paused)

    def _drain_tick(self) -> None:
        self._stop.wait(0.1)

    def _close(self) -> None:
        self.consumer.close(autocommit=False)


@dataclass
class _Polled:
    """One partition's messages from one poll, backend-neutral."""

    topic: str
    partition: int
    values: list
    first_offset: int
    last_offset: int
    max_ts_ms: int  # newest producer timestamp, 0 when none
    offsets: list | None = None  # every message's offset (None: first..last without gaps)


def iter_topic(
    bootstrap: str, topic: str, timeout_s: float = 10.0, group_id: str | None = None, idle_s: float = 2.0,
    cfg: dict[str, Any] | None = None,
) -> Iterator[Any]:
    """Every message of ``topic`` from the beginning (tests, tools): stops after ``idle_s`` without data."""
    from kafka import KafkaConsumer

    opts = client_options({**(cfg or {}), "bootstrap": bootstrap})
    c = KafkaConsumer(topic, group_id=group_id, auto_offset_reset="earliest", enable_auto_commit=False,
                      consumer_timeout_ms=int(idle_s * 1000), **opts)
    deadline = time.monotonic() + timeout_s
    try:
        for m in c:
            yield m
            if time.monotonic() > deadline:
                break
    finally:
        c.close()


# --------------------------------------------------------------------------------------------
# replay


def parse_speed(speed: str | float | None) -> float | None:
    """``"10x"`` -> 10.0, ``"max"``/None -> None (as fast as possible), ``"1"`` -> 1.0."""
    if speed is None:
        return None
    if isinstance(speed, (int, float)):
        return float(speed)
    s = str(speed).strip().lower()
    if s in ("max", "inf", ""):
        return None
    s = s[:-1] if s.endswith("x") else s
    v = float(s)
    if v <= 0:
        raise ValueError(f"--speed must be positive or 'max', got {speed!r}")
    return v


def replay(
    batches: Iterable[pa.RecordBatch | pa.Table], producer, topic: str, n_partitions: int,
    fmt: str = "json", speed: float | None = None, arrow_batch: int = 2000,
    sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
) -> dict[str, int]:
    """Publish canonical batches to ``topic`` keeping event-time gaps scaled by ``speed``.

    JSON: one message per record, key = ``src_ip`` (kafka-python hashes it to a partition).
    Arrow: records grouped by the partition their ``src_ip`` hashes to, ``arrow_batch`` per message,
    sent to that partition explicitly — the same keying as JSON, so both formats split alike.
    Returns counts: records, messages.
    """
    if fmt not in ("json", "arrow"):
        raise ValueError(f"replay format must be json or arrow, got {fmt!r}")
    t0_event: float | None = None
    t0_wall = clock()
    n_rec = n_msg = 0
    pending: dict[int, list[pa.Table]] = {}
    pending_n: dict[int, int] = {}
    part_cache: dict[str, int] = {}  # murmur2 in pure Python is slow; sources repeat

    def flush_part(p: int) -> None:
        nonlocal n_msg
        if not pending.get(p):
            return
        t = pa.concat_tables(pending[p]).combine_chunks()
        producer.send(topic, encode_arrow(t), partition=p)
        n_msg += 1
        pending[p], pending_n[p] = [], 0

    for b in batches:
        t = pa.Table.from_batches([b]) if isinstance(b, pa.RecordBatch) else b
        if t.num_rows == 0:
            continue
        ts = t.column("ts").cast(pa.int64()).to_numpy(zero_copy_only=False) / 1e6
        # Pace per slice: at most `step` rows and at most 20 ms of scaled event time per slice, so
        # sleeping never happens per record (that would cap the rate) yet gaps are kept.
        step = 2048 if fmt == "arrow" else 256
        if speed is not None:
            bucket = np.floor((ts - ts[0]) / (0.02 * speed)).astype(np.int64)
            cuts = np.flatnonzero(np.diff(bucket)) + 1
        else:
            cuts = np.zeros(0, dtype=np.int64)
        bounds = sorted(set(cuts.tolist()) | set(range(0, t.num_rows, step)) | {t.num_rows})
        for i0, i1 in zip(bounds[:-1], bounds[1:]):
            sl = t.slice(i0, i1 - i0)
            if speed is not None:
                ev = float(ts[i0])
                if t0_event is None:
                    t0_event = ev
                due = t0_wall + (ev - t0_event) / speed
                delay = due - clock()
                if delay > 0:
                    if fmt == "arrow":
                        for p in list(pending):
                            flush_part(p)
                    sleep(delay)
            src = sl.column("src_ip").to_pylist()
            if fmt == "json":
                for key, val in zip(src, table_to_json_messages(sl)):
                    producer.send(topic, val, key=str(key).encode())
                    n_msg += 1
            else:
                parts = np.array([part_cache[k] if k in part_cache else
                                  part_cache.setdefault(k, partition_for(str(k).encode(), n_partitions))
                                  for k in src])
                for p in np.unique(parts):
                    sub = sl.filter(pa.array(parts == p))
                    pending.setdefault(int(p), []).append(sub)
                    pending_n[int(p)] = pending_n.get(int(p), 0) + sub.num_rows
                    if pending_n[int(p)] >= arrow_batch:
                        flush_part(int(p))
            n_rec += sl.num_rows
    for p in list(pending):
        flush_part(p)
    producer.flush()
    return {"records": n_rec, "messages": n_msg}


# --------------------------------------------------------------------------------------------
# optional confluent-kafka (librdkafka) backend

_CONFLUENT_KEYS = {
    "security_protocol": "security.protocol", "sasl_mechanism": "sasl.mechanisms",
    "sasl_plain_username": "sasl.username", "sasl_plain_password": "sasl.password",
    "ssl_cafile": "ssl.ca.location", "ssl_certfile": "ssl.certificate.location",
    "ssl_keyfile": "ssl.key.location", "ssl_password": "ssl.key.password",
}


class ConfluentSource(KafkaSource):
    """The same source on confluent-kafka (librdkafka): ~10x kafka-python's per-message rate.

    ``kafka.backend: confluent`` selects it. Same queue, tracker, decoding, pause/resume and
    commit rules as :class:`KafkaSource`; librdkafka calls the rebalance callbacks inside
    ``consume()`` on this thread, so the revoke callback can commit synchronously.
    ``kafka.client_options`` here are librdkafka properties (``fetch.min.bytes``...).
    """

    def _make_consumer(self):
        from confluent_kafka import Consumer

        conf = {
            "bootstrap.servers": self.cfg["bootstrap"],
            "group.id": self.cfg.get("group_id", "graphsentry"),
            "enable.auto.commit": False,
            "auto.offset.reset": self.cfg.get("auto_offset_reset", "earliest"),
            "session.timeout.ms": int(self.cfg.get("session_timeout_ms", 10000)),
            "heartbeat.interval.ms": int(self.cfg.get("heartbeat_interval_ms", 3000)),
            "enable.partition.eof": False,
        }
        for k, ck in _CONFLUENT_KEYS.items():
            if self.cfg.get(k) not in (None, ""):
                conf[ck] = self.cfg[k]
        src = self

        def on_error(err):  # librdkafka reports "all brokers down" here (it reconnects by itself)
            from confluent_kafka import KafkaError

            if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
                src._rd_down = True
            log.debug("librdkafka: %s", err)

        conf["error_cb"] = on_error
        conf.update(self.cfg.get("client_options") or {})
        c = Consumer(conf)

        def on_assign(consumer, partitions):
            src._on_assigned({(p.topic, p.partition) for p in partitions})

        def on_revoke(consumer, partitions):
            src._commit()  # allowed here: same thread, before the partitions go
            src._on_revoked({(p.topic, p.partition) for p in partitions})

        c.subscribe([self.topic], on_assign=on_assign, on_revoke=on_revoke)
        return c

    def _connect_errors(self) -> tuple[type[BaseException], ...]:
        from confluent_kafka import KafkaException

        # librdkafka reports a bad configuration as ValueError/KafkaException at construction time
        return (KafkaException, ValueError)

    def _poll_chunks(self) -> list[_Polled]:
        by_tp: dict[tuple[str, int], list] = {}
        for m in self.consumer.consume(num_messages=self.max_poll_records, timeout=0.2):
            if m.error():
                log.warning("consume error: %s", m.error())
                continue
            by_tp.setdefault((m.topic(), m.partition()), []).append(m)
        if by_tp:
            self._rd_down = False
        return [_Polled(t, p, [m.value() for m in ms], ms[0].offset(), ms[-1].offset(),
                        max(m.timestamp()[1] for m in ms), [m.offset() for m in ms])
                for (t, p), ms in by_tp.items()]

    _rd_down = False

    def _broker_ok(self) -> bool:
        if not self._rd_down:
            return True
        self.consumer.list_topics(self.topic, timeout=1.0)  # raises while no broker answers
        self._rd_down = False
        return True

    def _committed(self, tp: tuple[str, int]) -> int | None:
        from confluent_kafka import TopicPartition

        off = self.consumer.committed([TopicPartition(*tp)], timeout=5)[0].offset
        return off if off >= 0 else None

    def _seek(self, tp: tuple[str, int], offset: int) -> None:
        from confluent_kafka import TopicPartition

        self.consumer.seek(TopicPartition(tp[0], tp[1], offset))

    def _commit_offsets(self, todo: dict[tuple[str, int], int]) -> None:
        from confluent_kafka import TopicPartition

        self.consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in todo.items()], asynchronous=False)

    def _positions(self) -> dict[tuple[str, int], tuple[int, int]]:
        from confluent_kafka import TopicPartition

        out = {}
        for tp in self.consumer.position([TopicPartition(t, p) for t, p in self.assigned]):
            part = TopicPartition(tp.topic, tp.partition)
            _lo, hi = self.consumer.get_watermark_offsets(part, timeout=2)
            cached = self.consumer.get_watermark_offsets(part, cached=True)  # see KafkaSource._positions
            out[(tp.topic, tp.partition)] = (tp.offset, max(hi, cached[1] if cached else -1))
        return out

    def _pause_all(self) -> bool:
        parts = self.consumer.assignment()
        if parts:
            self.consumer.pause(parts)
        return bool(parts)

    def _resume_all(self) -> None:
        parts = self.consumer.assignment()
        if parts:
            self.consumer.resume(parts)

    def _drain_tick(self) -> None:
        self.consumer.poll(0.1)  # keeps librdkafka serving callbacks while draining

    def _close(self) -> None:
        self.consumer.close()


def source_class(backend: str | None):
    """``kafka-python`` (default) -> :class:`KafkaSource`; ``confluent`` -> :class:`ConfluentSource`."""
    if backend in (None, "", "kafka-python"):
        return KafkaSource
    if backend == "confluent":
        try:
            import confluent_kafka  # noqa: F401
        except ImportError:
            raise ValueError("kafka.backend=confluent needs `pip install confluent-kafka`") from None
        return ConfluentSource
    raise ValueError(f"kafka.backend={backend!r}: must be 'kafka-python' or 'confluent'")

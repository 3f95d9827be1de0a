"""Kafka clients and broker availability: client options, producers, topics, waiting/retrying with a
backoff and saying so (:class:`BrokerHealth`), the acknowledged producer and the dead-letter topic."""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ingest.kafka_io.codecs import SECURITY_KEYS

log = logging.getLogger("ingest.kafka_io")


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

"""The optional confluent-kafka (librdkafka) backend of the consumer source, and the backend switch."""
from __future__ import annotations

import logging

from ingest.kafka_io.source import KafkaSource, _Polled

log = logging.getLogger("ingest.kafka_io")


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
            "fetch.wait.max.ms": int(self.cfg.get("fetch_max_wait_ms", 100)),
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
        out = []
        for (t, p), ms in by_tp.items():
            first, last = ms[0].offset(), ms[-1].offset()
            offsets = None if last - first + 1 == len(ms) else [m.offset() for m in ms]  # gaps: list them
            out.append(_Polled(t, p, [m.value() for m in ms], first, last, max(m.timestamp()[1] for m in ms),
                               offsets))
        return out

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
            # The high watermark of the latest fetch response (librdkafka fetches all the time, so it is
            # fresh) answers at once; a ListOffsets query is a broker round trip per partition (about
            # 0.4 s each on Tansu), which would stall this poll thread. See also KafkaSource._positions.
            cached = self.consumer.get_watermark_offsets(part, cached=True)
            hi = cached[1] if cached and cached[1] >= 0 else -1
            if hi < 0:  # nothing fetched yet: ask the broker
                hi = self.consumer.get_watermark_offsets(part, timeout=2)[1]
            out[(tp.topic, tp.partition)] = (tp.offset, hi)
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

    def _pause_parts(self, partitions: set[int]) -> None:
        from confluent_kafka import TopicPartition

        self.consumer.pause([TopicPartition(self.topic, p) for p in partitions])

    def _resume_parts(self, partitions: set[int]) -> None:
        from confluent_kafka import TopicPartition

        self.consumer.resume([TopicPartition(self.topic, p) for p in partitions])

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

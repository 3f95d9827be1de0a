"""Kafka I/O for the streaming daemon: message codecs, consumer source, producer, dead-letter topic.

One module per idea, everything importable from here: :mod:`~ingest.kafka_io.codecs` (the message formats),
:mod:`~ingest.kafka_io.decode` (a poll's messages to a canonical table), :mod:`~ingest.kafka_io.json_batch` (a
poll of JSON messages decoded at once),
:mod:`~ingest.kafka_io.clients` (producers, topics, broker availability, dead-letter topic),
:mod:`~ingest.kafka_io.offsets` (what may be committed), :mod:`~ingest.kafka_io.source` (the consumer
source), :mod:`~ingest.kafka_io.replay` (reading and replaying topics), :mod:`~ingest.kafka_io.confluent`
(the librdkafka backend).

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

from ingest.kafka_io.clients import (  # noqa: F401
    AckedProducer,
    Backoff,
    BrokerHealth,
    KafkaDeadLetter,
    KafkaUnavailable,
    StoppedWaiting,
    client_options,
    describe_error,
    ensure_topics,
    kafka_errors,
    make_producer,
    partition_for,
    probe,
    retry_kafka,
)
from ingest.kafka_io.codecs import (  # noqa: F401
    ARROW_MAGIC,
    FORMATS,
    SECURITY_KEYS,
    decode_arrow,
    encode_arrow,
    normalise_records,
    sniff_message,
    table_to_json_messages,
)
from ingest.kafka_io.confluent import (  # noqa: F401
    ConfluentSource,
    source_class,
)
from ingest.kafka_io.decode import (  # noqa: F401
    Decoded,
    decode_messages,
    records_to_table,
)
from ingest.kafka_io.offsets import (  # noqa: F401
    OffsetTracker,
)
from ingest.kafka_io.replay import (  # noqa: F401
    iter_topic,
    parse_speed,
    replay,
)
from ingest.kafka_io.source import (  # noqa: F401
    KafkaSource,
    SourceBatch,
)

__all__ = [
    'ARROW_MAGIC', 'FORMATS', 'SECURITY_KEYS', 'table_to_json_messages', 'encode_arrow', 'decode_arrow',
    'sniff_message', 'normalise_records', 'records_to_table', 'Decoded', 'decode_messages',
    'client_options', 'make_producer', 'ensure_topics', 'KafkaUnavailable', 'StoppedWaiting', 'probe',
    'describe_error', 'kafka_errors', 'Backoff', 'BrokerHealth', 'retry_kafka', 'AckedProducer',
    'partition_for', 'KafkaDeadLetter', 'OffsetTracker', 'SourceBatch', 'KafkaSource',
    'iter_topic', 'parse_speed', 'replay', 'ConfluentSource', 'source_class'
]

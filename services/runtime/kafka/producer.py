"""The event producer: idempotent, `acks=all`, CloudEvents headers, key = patient id.

Application code does not publish directly after a state change: it writes to the outbox
(services/runtime/outbox.py) and the relay publishes with this producer. Direct publishing
is for events that announce no state change of ours (telemetry forwarding, the benchmark).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from kafka import KafkaProducer
from kafka.partitioner.default import DefaultPartitioner, murmur2

from services.runtime.clock import Clock, SystemClock
from services.runtime.kafka.envelope import Envelope, ProtoMessage, encode_headers, new_envelope
from services.runtime.kafka.metrics import EVENTS_SENT

__all__ = [
    "PRODUCER_DEFAULTS",
    "EventProducer",
    "KeyHashCachingPartitioner",
    "supports_idempotence",
]

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 30.0

# Batching on: a few ms of linger fill batches under load and cost little latency when idle.
PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "linger_ms": 5,
    "batch_size": 256 * 1024,
    "max_in_flight_requests_per_connection": 5,
    "retries": 2**31 - 1,
    "delivery_timeout_ms": 120_000,
    "request_timeout_ms": 30_000,
    "max_block_ms": 60_000,
    "buffer_memory": 64 * 1024 * 1024,
}


class KeyHashCachingPartitioner(DefaultPartitioner):  # type: ignore[misc]
    """The default partitioner (murmur2 of the key, as the Java client) with the hash cached.

    kafka-python computes murmur2 in pure Python on every send (about 10 % of the producer's
    CPU); keys are patient ids and repeat, so each is hashed once. Same partition as the
    default for every key, so per-patient ordering and co-partitioning are unchanged.
    """

    MAX_KEYS = 200_000

    def __init__(self) -> None:
        self._hashes: dict[bytes, int] = {}

    def partition(  # noqa: PLR0917 (kafka-python's positional signature)
        self,
        topic: str,
        key: Any,
        serialized_key: bytes | None,
        value: Any,
        serialized_value: Any,
        cluster: Any,
    ) -> int:
        if serialized_key is None:
            return int(
                super().partition(topic, key, serialized_key, value, serialized_value, cluster)
            )
        partitions = cluster.partitions_for_topic(topic)
        if not partitions:
            raise ValueError(f"Topic {topic} not found in ClusterMetadata")
        hashed = self._hashes.get(serialized_key)
        if hashed is None:
            if len(self._hashes) >= self.MAX_KEYS:
                self._hashes.clear()
            hashed = self._hashes[serialized_key] = murmur2(serialized_key) & 0x7FFFFFFF
        # Kafka numbers partitions 0..n-1, so sorted(partitions)[i] == i.
        return hashed % len(partitions)


def supports_idempotence() -> bool:
    """kafka-python ≥ 2.1 implements the idempotent producer (KIP-98 sequence numbers)."""
    return "enable_idempotence" in KafkaProducer.DEFAULT_CONFIG


class EventProducer:
    """Sends events with CloudEvents binary headers; the record key is the patient id."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        source: str,
        clock: Clock | None = None,
        client_id: str | None = None,
        **overrides: Any,
    ) -> None:
        config = {**PRODUCER_DEFAULTS, **overrides}
        if supports_idempotence():
            # No duplicates or reordering from the producer's own retries.
            config.setdefault("enable_idempotence", True)
        if "buffer_memory" not in KafkaProducer.DEFAULT_CONFIG:
            config.pop("buffer_memory", None)
        self.source = source
        self._clock = clock or SystemClock()
        self._sent_children: dict[str, Any] = {}
        config.setdefault("partitioner", self.default_partitioner())
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap_servers,
            client_id=client_id or f"langerhans-{source}",
            **config,
        )

    @staticmethod
    def default_partitioner() -> KeyHashCachingPartitioner:
        """The partitioner every EventProducer uses (for bare kafka-python producers)."""
        return KeyHashCachingPartitioner()

    def _sent(self, topic: str) -> Any:
        child = self._sent_children.get(topic)
        if child is None:
            child = self._sent_children[topic] = EVENTS_SENT.labels(topic)
        return child

    @property
    def raw(self) -> KafkaProducer:
        """The underlying kafka-python producer (for the dead-letter path and metrics)."""
        return self._producer

    def envelope(
        self,
        key: str,
        event: ProtoMessage | bytes,
        *,
        event_type: str | None = None,
        event_id: str | None = None,
        time: datetime | None = None,
        extensions: Mapping[str, str] | None = None,
    ) -> Envelope:
        return new_envelope(
            key,
            event,
            source=self.source,
            time=time or self._clock.now(),
            event_type=event_type,
            event_id=event_id,
            extensions=extensions,
        )

    def send_envelope(self, topic: str, envelope: Envelope) -> Any:
        """Queue `envelope` for `topic`; returns kafka-python's future of the record metadata."""
        future = self._producer.send(
            topic,
            value=envelope.data,
            key=envelope.key.encode("utf-8"),
            headers=encode_headers(envelope),
        )
        # Counted when queued; per-record ack callbacks cost more than the send on a busy core.
        # Callers that must know wait on the future (the outbox relay does).
        self._sent(topic).inc()
        return future

    def send(
        self,
        topic: str,
        key: str,
        event: ProtoMessage | bytes,
        *,
        event_type: str | None = None,
        event_id: str | None = None,
        extensions: Mapping[str, str] | None = None,
    ) -> Any:
        """Queue an event (asynchronous); `flush()` or the future's `get()` waits for the ack."""
        envelope = self.envelope(
            key, event, event_type=event_type, event_id=event_id, extensions=extensions
        )
        return self.send_envelope(topic, envelope)

    def publish(
        self,
        topic: str,
        key: str,
        event: ProtoMessage | bytes,
        *,
        event_type: str | None = None,
        event_id: str | None = None,
        timeout_s: float = PUBLISH_TIMEOUT_S,
    ) -> Envelope:
        """Send one event and wait until the broker acknowledged it (all in-sync replicas)."""
        envelope = self.envelope(key, event, event_type=event_type, event_id=event_id)
        self.send_envelope(topic, envelope).get(timeout=timeout_s)
        return envelope

    def flush(self, timeout_s: float | None = PUBLISH_TIMEOUT_S) -> None:
        self._producer.flush(timeout=timeout_s)

    def close(self, timeout_s: float = PUBLISH_TIMEOUT_S) -> None:
        self._producer.close(timeout=timeout_s)

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

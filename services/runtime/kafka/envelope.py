"""CloudEvents binary mode on Kafka: event attributes in `ce_*` headers, payload as the value.

The value is the serialised protobuf; `ce_type` is the protobuf full name, so a consumer can
check it got the message type it expects before parsing. The key is the patient id.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

__all__ = [
    "CONTENT_TYPE_PROTOBUF",
    "SPEC_VERSION",
    "Envelope",
    "MalformedEventError",
    "ProtoMessage",
    "decode_headers",
    "encode_headers",
    "envelope_from_record",
    "new_envelope",
    "new_event_id",
]

SPEC_VERSION = "1.0"
CONTENT_TYPE_PROTOBUF = "application/protobuf"
CE_PREFIX = "ce_"
CONTENT_TYPE_HEADER = "content-type"
REQUIRED = ("specversion", "id", "type", "source")
# Extension attribute names: lower-case letters and digits only (CloudEvents spec).
_EXTENSION_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_CORE = frozenset({"specversion", "id", "type", "source", "time", "subject"})


class ProtoMessage(Protocol):
    """The part of a generated protobuf message the backbone uses."""

    DESCRIPTOR: Any

    def SerializeToString(self, *, deterministic: bool = ...) -> bytes: ...  # noqa: N802

    def ParseFromString(self, serialized: bytes) -> int: ...  # noqa: N802


M = TypeVar("M", bound=ProtoMessage)


class MalformedEventError(ValueError):
    """A record that cannot be understood as an event (goes to the dead-letter topic)."""


@dataclass(frozen=True)
class Envelope:
    """One event: CloudEvents attributes, the patient-id key and the payload bytes.

    `topic`/`partition`/`offset` are set on consumed events (empty on events to send).
    """

    event_id: str
    event_type: str
    source: str
    time: datetime
    key: str
    data: bytes
    content_type: str = CONTENT_TYPE_PROTOBUF
    subject: str | None = None
    extensions: Mapping[str, str] = field(default_factory=dict)
    topic: str = ""
    partition: int = -1
    offset: int = -1

    def __post_init__(self) -> None:
        if not self.event_id:
            raise MalformedEventError("event id is empty")
        if not self.event_type:
            raise MalformedEventError("event type is empty")
        if not self.source:
            raise MalformedEventError("event source is empty")
        if self.time.tzinfo is None:
            raise MalformedEventError("event time must be timezone-aware")
        for name in self.extensions:
            if not name or not set(name) <= _EXTENSION_CHARS or name in _CORE:
                raise MalformedEventError(f"invalid CloudEvents extension name {name!r}")

    def parse(self, message_type: type[M]) -> M:
        """The payload as `message_type`; MalformedEventError when the type or bytes do not fit."""
        expected = message_type.DESCRIPTOR.full_name
        if self.event_type != expected:
            raise MalformedEventError(f"event type is {self.event_type!r}, expected {expected!r}")
        message = message_type()
        try:
            message.ParseFromString(self.data)
        except Exception as exc:  # protobuf raises DecodeError, a plain Exception subclass
            raise MalformedEventError(f"payload is not a valid {expected}: {exc}") from exc
        return message

    def with_position(self, topic: str, partition: int, offset: int) -> Envelope:
        return replace(self, topic=topic, partition=partition, offset=offset)


def new_event_id() -> str:
    """A random (version 4) UUID.

    `uuid.uuid4()` reads os.urandom for every id, which costs tens of µs on some hosts; event
    ids need uniqueness, not secrecy, so the (fork-safe, urandom-seeded) PRNG is enough.
    """
    return str(uuid.UUID(int=random.getrandbits(128), version=4))


def _format_time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def new_envelope(
    key: str,
    event: ProtoMessage | bytes,
    *,
    source: str,
    time: datetime,
    event_type: str | None = None,
    event_id: str | None = None,
    subject: str | None = None,
    extensions: Mapping[str, str] | None = None,
) -> Envelope:
    """An envelope around a protobuf message (type from its descriptor) or raw bytes."""
    if not key:
        raise ValueError("the key (patient id) must not be empty")
    if isinstance(event, bytes | bytearray | memoryview):
        if event_type is None:
            raise ValueError("raw bytes need an explicit event_type")
        data = bytes(event)
        content_type = "application/octet-stream"
    else:
        full_name = event.DESCRIPTOR.full_name
        if event_type is not None and event_type != full_name:
            raise ValueError(f"event_type {event_type!r} does not match message {full_name!r}")
        event_type = full_name
        data = event.SerializeToString(deterministic=True)
        content_type = CONTENT_TYPE_PROTOBUF
    return Envelope(
        event_id=event_id or new_event_id(),
        event_type=event_type,
        source=source,
        time=time,
        key=key,
        data=data,
        content_type=content_type,
        subject=subject,
        extensions=dict(extensions or {}),
    )


def encode_headers(envelope: Envelope) -> list[tuple[str, bytes]]:
    """Kafka headers for CloudEvents binary content mode."""
    headers = [
        ("ce_specversion", SPEC_VERSION.encode()),
        ("ce_id", envelope.event_id.encode()),
        ("ce_type", envelope.event_type.encode()),
        ("ce_source", envelope.source.encode()),
        ("ce_time", _format_time(envelope.time).encode()),
        (CONTENT_TYPE_HEADER, envelope.content_type.encode()),
    ]
    if envelope.subject is not None:
        headers.append(("ce_subject", envelope.subject.encode()))
    headers += [(CE_PREFIX + name, value.encode()) for name, value in envelope.extensions.items()]
    return headers


def decode_headers(headers: Sequence[tuple[str, bytes | None]]) -> dict[str, str]:
    """`ce_*` attributes (prefix removed) and `content-type`; MalformedEventError if unreadable."""
    attributes: dict[str, str] = {}
    for name, raw in headers:
        if name != CONTENT_TYPE_HEADER and not name.startswith(CE_PREFIX):
            continue
        if raw is None:
            raise MalformedEventError(f"header {name} has no value")
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedEventError(f"header {name} is not UTF-8") from exc
        attribute = name if name == CONTENT_TYPE_HEADER else name[len(CE_PREFIX) :]
        if attribute in attributes:
            raise MalformedEventError(f"header {name} appears twice")
        attributes[attribute] = value
    return attributes


def envelope_from_record(record: Any) -> Envelope:
    """Decode a consumed kafka-python record; MalformedEventError when it is not a valid event."""
    attributes = decode_headers(record.headers or [])
    missing = [name for name in REQUIRED if not attributes.get(name)]
    if missing:
        raise MalformedEventError(
            f"missing CloudEvents headers: {', '.join('ce_' + m for m in missing)}"
        )
    if attributes["specversion"] != SPEC_VERSION:
        raise MalformedEventError(
            f"unsupported CloudEvents specversion {attributes['specversion']!r}"
        )
    if record.key is None:
        raise MalformedEventError("record has no key (patient id)")
    try:
        key = record.key.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedEventError("record key is not UTF-8") from exc
    if record.value is None:
        raise MalformedEventError("record has no value")
    raw_time = attributes.get("time")
    try:
        time = datetime.fromisoformat(raw_time) if raw_time else None
    except ValueError as exc:
        raise MalformedEventError(f"ce_time {raw_time!r} is not RFC 3339") from exc
    if time is None or time.tzinfo is None:
        raise MalformedEventError("ce_time is missing or has no time zone")
    extensions = {
        name: value
        for name, value in attributes.items()
        if name not in _CORE and name != CONTENT_TYPE_HEADER
    }
    return Envelope(
        event_id=attributes["id"],
        event_type=attributes["type"],
        source=attributes["source"],
        time=time,
        key=key,
        data=bytes(record.value),
        content_type=attributes.get(CONTENT_TYPE_HEADER, CONTENT_TYPE_PROTOBUF),
        subject=attributes.get("subject"),
        extensions=extensions,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
    )

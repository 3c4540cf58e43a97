"""CloudEvents binary mode on Kafka: event attributes in `ce_*` headers, payload as the value.

The value is the serialised protobuf; `ce_type` is the protobuf full name, so a consumer can
check it got the message type it expects before parsing. The key is the patient id.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from time import time_ns
from typing import Any, Protocol, TypeVar

from services.runtime.fast_init import without_init

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
        _check(self.event_id, self.event_type, self.source, self.time, self.extensions)

    @classmethod
    def _fast(cls, **fields: Any) -> Envelope:
        """Same checks and result as `Envelope(**fields)` with every field given, at a third
        of the cost: a frozen dataclass sets each field through object.__setattr__, which is
        a measurable share of the per-event CPU at 20k events/s."""
        _check(
            fields["event_id"],
            fields["event_type"],
            fields["source"],
            fields["time"],
            fields["extensions"],
        )
        return without_init(cls, **fields)

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


def _check(
    event_id: str, event_type: str, source: str, time: datetime, extensions: Mapping[str, str]
) -> None:
    if not event_id:
        raise MalformedEventError("event id is empty")
    if not event_type:
        raise MalformedEventError("event type is empty")
    if not source:
        raise MalformedEventError("event source is empty")
    if time.tzinfo is None:
        raise MalformedEventError("event time must be timezone-aware")
    for name in extensions:
        if not name or not set(name) <= _EXTENSION_CHARS or name in _CORE:
            raise MalformedEventError(f"invalid CloudEvents extension name {name!r}")


def new_event_id() -> str:
    """A time-ordered random UUID (version 7, RFC 9562): 48-bit Unix milliseconds, 74 random bits.

    Every consumer inserts each event id into its dedupe table (and the outbox into its own):
    ids that grow with time land next to each other in those B-tree indexes, where random
    version 4 ids touch a different page per insert. Measured on SQLite with 200k rows, 1000
    per transaction: half the CPU and 2.4× less wall time per row. The millisecond prefix is
    wall-clock time from the host, used only for index locality (the event's time is `ce_time`
    from the injected clock). Random bits come from the fork-safe, urandom-seeded PRNG: ids
    need uniqueness, not secrecy, and os.urandom per id costs tens of µs on some hosts.
    """
    value = (
        (time_ns() // 1_000_000) << 80
        | _UUID_V7
        | random.getrandbits(12) << 64
        | random.getrandbits(62)
    )
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# Version nibble (bits 76–79) = 7, variant (bits 62–63) = 0b10.
_UUID_V7 = (0x7 << 76) | (0x2 << 62)


def _format_time(value: datetime) -> str:
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    # isoformat ends in "+00:00" for UTC; CloudEvents examples use "Z".
    return value.isoformat(timespec="microseconds")[:-6] + "Z"


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
    return Envelope._fast(
        event_id=event_id or new_event_id(),
        event_type=event_type,
        source=source,
        time=time,
        key=key,
        data=data,
        content_type=content_type,
        subject=subject,
        extensions=dict(extensions) if extensions else {},
        topic="",
        partition=-1,
        offset=-1,
    )


_SPEC_VERSION_HEADER = ("ce_specversion", SPEC_VERSION.encode())
# Header values that repeat on every record (types, sources, content types): encode them once.
_ENCODED: dict[str, bytes] = {}
_ENCODED_MAX = 4096


def _encoded(value: str) -> bytes:
    raw = _ENCODED.get(value)
    if raw is None:
        raw = value.encode()
        if len(_ENCODED) < _ENCODED_MAX:
            _ENCODED[value] = raw
    return raw


def encode_headers(envelope: Envelope) -> list[tuple[str, bytes]]:
    """Kafka headers for CloudEvents binary content mode."""
    headers = [
        _SPEC_VERSION_HEADER,
        ("ce_id", envelope.event_id.encode()),
        ("ce_type", _encoded(envelope.event_type)),
        ("ce_source", _encoded(envelope.source)),
        ("ce_time", _format_time(envelope.time).encode()),
        (CONTENT_TYPE_HEADER, _encoded(envelope.content_type)),
    ]
    if envelope.subject is not None:
        headers.append(("ce_subject", envelope.subject.encode()))
    if envelope.extensions:
        headers += [(CE_PREFIX + n, value.encode()) for n, value in envelope.extensions.items()]
    return headers


# The headers every event carries, by name: no prefix test and slice per header.
_HEADER_ATTRIBUTES = {
    **{CE_PREFIX + name: name for name in ("specversion", "id", "type", "source", "time")},
    CONTENT_TYPE_HEADER: CONTENT_TYPE_HEADER,
}


def decode_headers(headers: Sequence[tuple[str, bytes | None]]) -> dict[str, str]:
    """`ce_*` attributes (prefix removed) and `content-type`; MalformedEventError if unreadable."""
    attributes: dict[str, str] = {}
    for name, raw in headers:
        known = _HEADER_ATTRIBUTES.get(name)
        if known is not None:
            attribute = known
        elif name.startswith(CE_PREFIX):
            attribute = name[3:]
        else:
            continue
        if raw is None:
            raise MalformedEventError(f"header {name} has no value")
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedEventError(f"header {name} is not UTF-8") from exc
        if attribute in attributes:
            raise MalformedEventError(f"header {name} appears twice")
        attributes[attribute] = value
    return attributes


_NOT_EXTENSIONS = _CORE | {CONTENT_TYPE_HEADER}


def envelope_from_record(record: Any) -> Envelope:
    """Decode a consumed kafka-python record; MalformedEventError when it is not a valid event."""
    attributes = decode_headers(record.headers or ())
    get = attributes.get
    event_id, event_type, source = get("id"), get("type"), get("source")
    specversion = get("specversion")
    if not (specversion and event_id and event_type and source):
        missing = [name for name in REQUIRED if not get(name)]
        raise MalformedEventError(
            f"missing CloudEvents headers: {', '.join('ce_' + m for m in missing)}"
        )
    if specversion != SPEC_VERSION:
        raise MalformedEventError(f"unsupported CloudEvents specversion {specversion!r}")
    raw_key = record.key
    if raw_key is None:
        raise MalformedEventError("record has no key (patient id)")
    try:
        key = raw_key.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedEventError("record key is not UTF-8") from exc
    value = record.value
    if value is None:
        raise MalformedEventError("record has no value")
    raw_time = get("time")
    try:
        time = datetime.fromisoformat(raw_time) if raw_time else None
    except ValueError as exc:
        raise MalformedEventError(f"ce_time {raw_time!r} is not RFC 3339") from exc
    if time is None or time.tzinfo is None:
        raise MalformedEventError("ce_time is missing or has no time zone")
    # Usually exactly the six standard attributes: skip building an empty dict the slow way.
    if len(attributes) > 6 or CONTENT_TYPE_HEADER not in attributes:
        extensions = {n: v for n, v in attributes.items() if n not in _NOT_EXTENSIONS}
    else:
        extensions = {}
    return Envelope._fast(
        event_id=event_id,
        event_type=event_type,
        source=source,
        time=time,
        key=key,
        data=value if type(value) is bytes else bytes(value),
        content_type=get(CONTENT_TYPE_HEADER, CONTENT_TYPE_PROTOBUF),
        subject=get("subject"),
        extensions=extensions,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
    )

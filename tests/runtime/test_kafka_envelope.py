"""CloudEvents binary-mode headers: encoding, decoding and what counts as malformed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any, NamedTuple

import pytest
from google.protobuf.wrappers_pb2 import DoubleValue, StringValue

from services.runtime.kafka.envelope import (
    CONTENT_TYPE_PROTOBUF,
    Envelope,
    MalformedEventError,
    decode_headers,
    encode_headers,
    envelope_from_record,
    new_envelope,
)

T0 = datetime(2026, 3, 1, 8, 30, 15, 123456, tzinfo=UTC)


class Record(NamedTuple):
    """The fields of a kafka-python ConsumerRecord the decoder reads."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, Any]]


def as_record(envelope: Envelope, **changes: Any) -> Record:
    record = Record(
        topic="cgm.readings.v1",
        partition=4,
        offset=17,
        key=envelope.key.encode(),
        value=envelope.data,
        headers=encode_headers(envelope),
    )
    return record._replace(**changes)


def test_protobuf_event_gets_binary_mode_headers() -> None:
    envelope = new_envelope(
        "patient-1", StringValue(value="hello"), source="cgm-ingestion", time=T0, event_id="e-1"
    )
    headers = dict(encode_headers(envelope))
    assert headers == {
        "ce_specversion": b"1.0",
        "ce_id": b"e-1",
        "ce_type": b"google.protobuf.StringValue",
        "ce_source": b"cgm-ingestion",
        "ce_time": b"2026-03-01T08:30:15.123456Z",
        "content-type": b"application/protobuf",
    }


def test_round_trip_keeps_every_attribute_and_the_position() -> None:
    sent = new_envelope(
        "patient-7",
        StringValue(value="x"),
        source="dosing-engine",
        time=T0.astimezone(timezone(timedelta(hours=2))),
        extensions={"sentns": "123"},
    )
    received = envelope_from_record(as_record(sent))
    assert received.event_id == sent.event_id
    assert received.event_type == "google.protobuf.StringValue"
    assert received.source == "dosing-engine"
    assert received.time == T0
    assert received.key == "patient-7"
    assert received.content_type == CONTENT_TYPE_PROTOBUF
    assert received.extensions == {"sentns": "123"}
    assert (received.topic, received.partition, received.offset) == ("cgm.readings.v1", 4, 17)
    assert received.parse(StringValue).value == "x"


def test_each_event_gets_its_own_id() -> None:
    ids = {new_envelope("p", b"x", source="s", time=T0, event_type="t").event_id for _ in range(50)}
    assert len(ids) == 50


def test_raw_bytes_need_an_explicit_type() -> None:
    with pytest.raises(ValueError, match="event_type"):
        new_envelope("p", b"x", source="s", time=T0)


def test_declared_type_must_match_the_message() -> None:
    with pytest.raises(ValueError, match="does not match"):
        new_envelope("p", StringValue(), source="s", time=T0, event_type="other.Type")


def test_empty_key_is_refused() -> None:
    with pytest.raises(ValueError, match="patient id"):
        new_envelope("", b"x", source="s", time=T0, event_type="t")


def test_naive_time_is_refused() -> None:
    with pytest.raises(MalformedEventError, match="timezone"):
        new_envelope("p", b"x", source="s", time=datetime(2026, 1, 1), event_type="t")


@pytest.mark.parametrize("name", ["Bad", "with_underscore", "id", ""])
def test_invalid_extension_names_are_refused(name: str) -> None:
    with pytest.raises(MalformedEventError):
        new_envelope("p", b"x", source="s", time=T0, event_type="t", extensions={name: "v"})


@pytest.mark.parametrize("missing", ["ce_id", "ce_type", "ce_source", "ce_specversion"])
def test_missing_required_header_is_malformed(missing: str) -> None:
    envelope = new_envelope("p", b"x", source="s", time=T0, event_type="t")
    record = as_record(envelope)
    record = record._replace(headers=[(k, v) for k, v in record.headers if k != missing])
    with pytest.raises(MalformedEventError, match=missing):
        envelope_from_record(record)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"key": None}, "no key"),
        ({"key": b"\xff\xfe"}, "key is not UTF-8"),
        ({"value": None}, "no value"),
        ({"headers": []}, "missing CloudEvents headers"),
    ],
)
def test_broken_records_are_malformed(change: dict[str, Any], message: str) -> None:
    envelope = new_envelope("p", b"x", source="s", time=T0, event_type="t")
    with pytest.raises(MalformedEventError, match=message):
        envelope_from_record(as_record(envelope, **change))


@pytest.mark.parametrize(
    ("header", "value", "message"),
    [
        ("ce_time", b"yesterday", "RFC 3339"),
        ("ce_time", b"2026-03-01T08:30:15", "time zone"),
        ("ce_specversion", b"0.3", "specversion"),
        ("ce_id", b"\xc3\x28", "not UTF-8"),
        ("ce_id", None, "no value"),
    ],
)
def test_bad_header_values_are_malformed(header: str, value: bytes | None, message: str) -> None:
    envelope = new_envelope("p", b"x", source="s", time=T0, event_type="t")
    record = as_record(envelope)
    headers = [(k, value if k == header else v) for k, v in record.headers]
    with pytest.raises(MalformedEventError, match=message):
        envelope_from_record(record._replace(headers=headers))


def test_duplicate_header_is_malformed() -> None:
    headers = [("ce_id", b"a"), ("ce_id", b"b")]
    with pytest.raises(MalformedEventError, match="twice"):
        decode_headers(headers)


def test_foreign_headers_are_ignored() -> None:
    assert decode_headers([("traceparent", b"00-ab"), ("ce_id", b"x")]) == {"id": "x"}


def test_parse_refuses_a_different_message_type() -> None:
    envelope = new_envelope("p", StringValue(value="x"), source="s", time=T0)
    with pytest.raises(MalformedEventError, match=r"expected 'google\.protobuf\.DoubleValue'"):
        envelope.parse(DoubleValue)


def test_parse_refuses_bytes_that_are_not_the_message() -> None:
    envelope = new_envelope("p", b"\xff\xff\xff", source="s", time=T0, event_type="t")
    forged = Envelope(
        event_id=envelope.event_id,
        event_type="google.protobuf.StringValue",
        source="s",
        time=T0,
        key="p",
        data=b"\x0a\x05ab",  # field 1, length 5, only 2 bytes follow
    )
    with pytest.raises(MalformedEventError, match="not a valid"):
        forged.parse(StringValue)

"""Protobuf envelopes under hostile input.

- CloudEvents binary-mode headers and payloads through the consumer runner's own decode path
  (`ConsumerRunner._decode`): a valid `Envelope` or `MalformedEventError`, nothing else.
- Signed pump commands into the hub's verifier (`edge/verify.py`): random bytes and mutated
  genuine envelopes give a rejection with a reason, never an exception, and nothing whose
  signed bytes were changed is ever accepted.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langerhans.cgm.v1 import cgm_pb2
from langerhans.device.v1 import device_pb2

from edge.verify import CommandVerifier, RejectionReason
from services.runtime.clock import FixedClock
from services.runtime.command_signing import CommandSigner, TrustedKeys, generate_signing_key
from services.runtime.kafka.consumer import ConsumerRunner
from services.runtime.kafka.envelope import (
    Envelope,
    MalformedEventError,
    encode_headers,
    new_envelope,
)
from tests.edge._commands import DEVICE, PATIENT, T0, make_command
from tests.fuzz.conftest import Tally, examples

FUZZ_SETTINGS = settings(
    max_examples=examples(), deadline=None, suppress_health_check=list(HealthCheck)
)
HEADER_NAMES = [
    "ce_specversion",
    "ce_id",
    "ce_type",
    "ce_source",
    "ce_time",
    "ce_subject",
    "content-type",
    "ce_Bad",
    "ce_",
    "ce_ext1",
    "other",
]
# Message types the services' consumers decode.
CONSUMED_TYPES: list[Any] = [
    cgm_pb2.RawCgmReading,
    cgm_pb2.CgmReading,
    device_pb2.PumpCommand,
    device_pb2.SignedPumpCommand,
]


def _valid_record(message: Any) -> SimpleNamespace:
    envelope = new_envelope("patient-1", message, source="fuzz", time=datetime.now(UTC))
    return SimpleNamespace(
        headers=encode_headers(envelope),
        key=b"patient-1",
        value=envelope.data,
        topic="t",
        partition=0,
        offset=0,
    )


header_value = st.one_of(
    st.none(),
    st.binary(max_size=40),
    st.sampled_from(
        [
            b"1.0",
            b"0.3",
            b"langerhans.cgm.v1.RawCgmReading",
            b"2026-01-01T00:00:00Z",
            b"2026-01-01T00:00:00",
            b"not a time",
            b"\xff\xfe",
            b"",
        ]
    ),
)
records = st.builds(
    SimpleNamespace,
    headers=st.lists(st.tuples(st.sampled_from(HEADER_NAMES), header_value), max_size=9),
    key=st.one_of(st.none(), st.binary(max_size=12)),
    value=st.one_of(st.none(), st.binary(max_size=64)),
    topic=st.just("t"),
    partition=st.just(0),
    offset=st.just(0),
)


def _decode(message_type: Any, record: Any) -> Envelope:
    # The runner's own method, bound to a stand-in that carries only what it reads.
    runner = SimpleNamespace(_message_type=message_type)
    envelope: Envelope = ConsumerRunner._decode(runner, record)  # type: ignore[arg-type]
    return envelope


@pytest.mark.parametrize("message_type", CONSUMED_TYPES, ids=lambda t: t.DESCRIPTOR.name)
def test_random_records_decode_or_are_malformed(message_type: Any, tally: Tally) -> None:
    name = f"envelope.random.{message_type.DESCRIPTOR.name}"

    @FUZZ_SETTINGS
    @given(record=records)
    def run(record: Any) -> None:
        try:
            _decode(message_type, record)
        except MalformedEventError:
            tally.record(name, "parse_error")
            return
        except Exception:
            tally.record(name, "unexpected")
            raise
        tally.record(name, "ok")

    run()


def _genuine() -> SimpleNamespace:
    reading = cgm_pb2.RawCgmReading(patient_id="patient-1", sensor_id="s1")
    reading.glucose.value = 120.0
    reading.measured_at.FromDatetime(datetime(2026, 1, 1, tzinfo=UTC))
    return _valid_record(reading)


_GENUINE = _genuine()


@st.composite
def mutated_records(draw: st.DrawFn) -> SimpleNamespace:
    """A genuine RawCgmReading event with a few headers or payload bytes changed."""
    record = SimpleNamespace(**vars(_GENUINE))
    headers = list(record.headers)
    value = bytearray(record.value)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["drop_header", "dup_header", "edit_header", "edit_value"]))
        if op == "drop_header" and headers:
            headers.pop(draw(st.integers(0, len(headers) - 1)))
        elif op == "dup_header" and headers:
            headers.append(headers[draw(st.integers(0, len(headers) - 1))])
        elif op == "edit_header" and headers:
            i = draw(st.integers(0, len(headers) - 1))
            headers[i] = (headers[i][0], draw(header_value))
        elif value:
            i = draw(st.integers(0, len(value) - 1))
            value[i] = draw(st.integers(0, 255))
    record.headers, record.value = headers, bytes(value)
    return record


def test_mutated_genuine_events_decode_or_are_malformed(tally: Tally) -> None:
    @FUZZ_SETTINGS
    @given(record=mutated_records())
    def run(record: Any) -> None:
        try:
            envelope = _decode(cgm_pb2.RawCgmReading, record)
        except MalformedEventError:
            tally.record("envelope.mutated", "parse_error")
            return
        except Exception:
            tally.record("envelope.mutated", "unexpected")
            raise
        assert envelope.key == "patient-1"
        tally.record("envelope.mutated", "ok")

    run()


# ------------------------------------------------------------------ signed pump commands
@pytest.fixture(scope="module")
def signer() -> CommandSigner:
    return generate_signing_key()


@pytest.fixture
def verifier(tmp_path: Path, signer: CommandSigner) -> Iterator[CommandVerifier]:
    verifier = CommandVerifier(
        tmp_path / "verify.db",
        TrustedKeys([signer.public_key]),
        device_id=DEVICE,
        patient_id=PATIENT,
        clock=FixedClock(T0),
    )
    yield verifier
    verifier.close()


def test_random_bytes_never_verify(verifier: CommandVerifier, tally: Tally) -> None:
    @FUZZ_SETTINGS
    @given(data=st.binary(max_size=200))
    def run(data: bytes) -> None:
        try:
            verdict = verifier.verify(data)
        except Exception:
            tally.record("command.random", "unexpected")
            raise
        assert not verdict.accepted
        assert isinstance(verdict.reason, RejectionReason)
        tally.record("command.random", "parse_error")

    run()


def test_mutated_signed_commands_never_execute_changed_bytes(
    verifier: CommandVerifier, signer: CommandSigner, tally: Tally
) -> None:
    sequences = itertools.count(1)

    @FUZZ_SETTINGS
    @given(
        edits=st.lists(
            st.tuples(st.integers(0, 10_000), st.integers(1, 255)), min_size=1, max_size=3
        ),
        tail=st.binary(max_size=4),
    )
    def run(edits: list[tuple[int, int]], tail: bytes) -> None:
        genuine = signer.sign(
            make_command(sequence=next(sequences), issued_at=T0, bolus_u=0.5, automatic_bolus=True)
        )
        wire = bytearray(genuine.SerializeToString())
        for position, xor in edits:
            wire[position % len(wire)] ^= xor
        wire += tail
        try:
            verdict = verifier.verify(bytes(wire))
        except Exception:
            tally.record("command.mutated", "unexpected")
            raise
        if verdict.accepted:
            # Only possible when the edits left the signed bytes and signature intact
            # (e.g. in the outer framing); the command then is exactly the genuine one.
            parsed = device_pb2.SignedPumpCommand.FromString(bytes(wire))
            assert parsed.command == genuine.command
            assert parsed.signature == genuine.signature
            tally.record("command.mutated", "ok_unchanged_command")
        else:
            tally.record("command.mutated", "parse_error")

    run()

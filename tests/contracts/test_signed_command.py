"""The signed pump command envelope: the bytes that are signed are the bytes that arrive."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st
from langerhans.common.v1 import common_pb2
from langerhans.device.v1 import device_gateway_service_pb2 as gw_pb2
from langerhans.device.v1 import device_pb2

ISSUED_AT = datetime(2025, 3, 1, 7, 30, tzinfo=UTC)


def _ts(at: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(at)
    return ts


def _bolus_command(sequence: int, insulin_u: float) -> device_pb2.PumpCommand:
    return device_pb2.PumpCommand(
        command_id=f"cmd-{sequence}",
        patient_id="patient-1",
        device_id="hub-1",
        sequence=sequence,
        issued_at=_ts(ISSUED_AT),
        expires_at=_ts(ISSUED_AT + timedelta(seconds=60)),
        origin=device_pb2.PUMP_COMMAND_ORIGIN_AUTOMATIC,
        issued_by="dosing-engine",
        decision_id="decision-1",
        deliver_bolus=device_pb2.DeliverBolus(
            insulin_u=insulin_u,
            kind=common_pb2.BOLUS_KIND_STANDARD,
            immediate_pct=100.0,
            automatic=True,
        ),
    )


def _sign(command: device_pb2.PumpCommand, key: Ed25519PrivateKey) -> device_pb2.SignedPumpCommand:
    payload = command.SerializeToString(deterministic=True)
    return device_pb2.SignedPumpCommand(
        command=payload, signature=key.sign(payload), key_id="dosing-2025-03"
    )


actions = st.one_of(
    st.builds(
        lambda r, d: {"set_temp_basal": device_pb2.SetTempBasal(rate_u_per_h=r, duration_min=d)},
        st.floats(0, 30, allow_nan=False),
        st.integers(0, 120),
    ),
    st.just({"cancel_temp_basal": device_pb2.CancelTempBasal()}),
    st.builds(
        lambda u, pct, mins: {
            "deliver_bolus": device_pb2.DeliverBolus(
                insulin_u=u,
                kind=common_pb2.BOLUS_KIND_DUAL_WAVE,
                immediate_pct=pct,
                extended_duration_min=mins,
            )
        },
        st.floats(0.05, 30, allow_nan=False),
        st.floats(0, 100, allow_nan=False),
        st.integers(30, 480),
    ),
    st.builds(lambda d: {"suspend": device_pb2.Suspend(duration_min=d)}, st.integers(0, 120)),
    st.just({"resume": device_pb2.Resume()}),
)


@settings(max_examples=200, deadline=None)
@given(sequence=st.integers(1, 2**64 - 1), action=actions, command_id=st.uuids())
def test_serialize_parse_serialize_is_byte_identical(
    sequence: int, action: dict[str, object], command_id: object
) -> None:
    command = device_pb2.PumpCommand(
        command_id=str(command_id),
        patient_id="patient-1",
        device_id="hub-1",
        sequence=sequence,
        issued_at=_ts(ISSUED_AT),
        expires_at=_ts(ISSUED_AT + timedelta(minutes=5)),
        **action,  # type: ignore[arg-type]
    )
    first = command.SerializeToString(deterministic=True)
    parsed = device_pb2.PumpCommand.FromString(first)
    assert parsed == command
    assert parsed.SerializeToString(deterministic=True) == first
    # The envelope survives its own round trip with the payload bytes untouched.
    envelope = device_pb2.SignedPumpCommand(command=first, signature=b"\x01" * 64, key_id="k")
    again = device_pb2.SignedPumpCommand.FromString(envelope.SerializeToString(deterministic=True))
    assert again.command == first


def test_signature_verifies_after_transport_and_names_one_action() -> None:
    key = Ed25519PrivateKey.generate()
    signed = _sign(_bolus_command(7, 0.35), key)
    # Down the Connect stream inside a ConnectResponse, as the hub receives it.
    wire = gw_pb2.ConnectResponse(cloud_sequence=3, signed_command=signed).SerializeToString()
    received = gw_pb2.ConnectResponse.FromString(wire).signed_command

    key.public_key().verify(received.signature, received.command)  # raises if altered
    command = device_pb2.PumpCommand.FromString(received.command)
    assert command.WhichOneof("action") == "deliver_bolus"
    assert command.deliver_bolus.insulin_u == pytest.approx(0.35)
    assert command.sequence == 7
    assert len(received.signature) == 64


def test_tampered_amount_fails_verification() -> None:
    key = Ed25519PrivateKey.generate()
    signed = _sign(_bolus_command(8, 0.5), key)
    # A compromised gateway rewrites the amount and re-serialises the command.
    forged = device_pb2.PumpCommand.FromString(signed.command)
    forged.deliver_bolus.insulin_u = 5.0
    tampered = device_pb2.SignedPumpCommand(
        command=forged.SerializeToString(deterministic=True),
        signature=signed.signature,
        key_id=signed.key_id,
    )
    with pytest.raises(InvalidSignature):
        key.public_key().verify(tampered.signature, tampered.command)


def test_lifecycle_states_cover_the_brief() -> None:
    names = {
        v.name.removeprefix("PUMP_COMMAND_STATE_")
        for v in device_pb2.PumpCommandState.DESCRIPTOR.values
    }
    assert names >= {"QUEUED", "SENT", "RECEIVED", "EXECUTED", "REJECTED", "EXPIRED", "UNCERTAIN"}

"""Insulin Delivery Service codecs: hand-worked vectors, E2E protection, round trips."""

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.ble import CodecError
from edge.ble.crc import crc16_mcrf4xx
from edge.ble.ids import (
    ActivationType,
    BolusDeliveredPart1,
    BolusDeliveredPart2,
    BolusEndReason,
    BolusType,
    CancelBolus,
    CancelTbr,
    CommandOpcode,
    CommandResponse,
    DeliveryContext,
    HistoryEvent,
    HistoryEventType,
    OperationalState,
    ResponseCode,
    SetBolus,
    SetTbr,
    SetTherapyControlState,
    StatusReaderOpcode,
    StatusReaderRequest,
    TbrEnded,
    TbrEndReason,
    TbrStarted,
    TbrType,
    TherapyControlState,
    decode_command,
    decode_command_response,
    decode_history,
    decode_status,
    encode_command,
    encode_command_response,
    encode_history,
    encode_status,
    encode_status_reader_request,
)
from edge.ble.mder import MderNumber


def test_set_tbr_vector_with_e2e():
    cmd = SetTbr(TbrType.ABSOLUTE, 1.5, 30, context=DeliveryContext.AP_CONTROLLER)
    # op 0x0FFF (FF 0F); flags 0x02 (context present); type absolute 0x33;
    # 1.5 U/h = mantissa 15, exponent -1 -> 0xF00F (0F F0); 30 min (1E 00); context 0x55;
    # E2E-Counter 7; E2E-CRC over all ten octets before it
    body = bytes.fromhex("ff0f02330ff01e005507")
    wire = encode_command(cmd, e2e_counter=7)
    assert wire[:-2] == body
    assert wire[-2:] == crc16_mcrf4xx(body).to_bytes(2, "little")
    assert decode_command(wire, e2e=True) == (cmd, 7)


def test_set_bolus_and_cancel_vectors():
    bolus = SetBolus(BolusType.FAST, 2.35, 0, 0, activation_type=ActivationType.COMMANDED)
    # op 0x114B (4B 11); flags 0x04 (activation present); fast 0x33; 2.35 U = EB E0;
    # extended 0 (00 00); duration 0 (00 00); activation commanded 0x5A
    assert encode_command(bolus, e2e_counter=None) == bytes.fromhex(
        "4b110433ebe00000000 05a".replace(" ", "")
    )
    assert encode_command(CancelTbr(), e2e_counter=None) == bytes.fromhex("1111")
    assert encode_command(CancelBolus(0x0102), e2e_counter=None) == bytes.fromhex("78110201")
    suspend = SetTherapyControlState(TherapyControlState.PAUSE)
    assert encode_command(suspend, e2e_counter=None) == bytes.fromhex("5a0f3c")
    multiwave = SetBolus(BolusType.MULTIWAVE, 1.0, 2.0, 90)
    assert decode_command(encode_command(multiwave, e2e_counter=3), e2e=True) == (multiwave, 3)


def test_dose_that_would_need_rounding_is_refused():
    with pytest.raises(CodecError, match="exactly"):
        encode_command(SetTbr(TbrType.ABSOLUTE, 20.46, 30), e2e_counter=None)
    # 25.5 U fits exactly (mantissa 255, exponent -1)
    assert encode_command(SetBolus(BolusType.FAST, 25.5, 0, 0), e2e_counter=None)


def test_bolus_shape_rules():
    with pytest.raises(CodecError):
        encode_command(SetBolus(BolusType.FAST, 1.0, 1.0, 30), e2e_counter=None)
    with pytest.raises(CodecError):
        encode_command(SetBolus(BolusType.EXTENDED, 0, 2.0, 0), e2e_counter=None)
    with pytest.raises(CodecError):
        encode_command(SetBolus(BolusType.FAST, -1.0, 0, 0), e2e_counter=None)


def test_response_code_from_a_real_pump_capture():
    # An IDD Command CP indication captured from a commercial pump (no E2E): Response Code
    # 0x0F55, request op 0x148E, Success 0x0F
    resp = decode_command_response(bytes.fromhex("550f8e140f"), e2e=False)
    assert resp.opcode is CommandOpcode.RESPONSE_CODE
    assert resp.request_opcode == 0x148E
    assert resp.succeeded


def test_set_bolus_response_round_trip_and_errors():
    resp = CommandResponse(CommandOpcode.SET_BOLUS_RESPONSE, bolus_id=42)
    wire = encode_command_response(resp, e2e_counter=9)
    got = decode_command_response(wire, e2e=True)
    assert got.bolus_id == 42
    assert got.e2e_counter == 9
    assert got.succeeded
    failed = CommandResponse(
        CommandOpcode.RESPONSE_CODE, CommandOpcode.SET_BOLUS, ResponseCode.PARAMETER_OUT_OF_RANGE
    )
    assert not decode_command_response(
        encode_command_response(failed, e2e_counter=None), e2e=False
    ).succeeded
    flipped = bytearray(wire)
    flipped[2] ^= 0x10
    with pytest.raises(CodecError):
        decode_command_response(bytes(flipped), e2e=True)
    with pytest.raises(CodecError):
        decode_command_response(bytes.fromhex("4b11"), e2e=False)  # a command, not a response


def test_idd_status_vector():
    # run 0x55, ready 0x96, reservoir 150.5 U = mantissa 1505 exp -1 -> 0xF5E1, attached
    wire = bytes.fromhex("5596e1f501")
    status = decode_status(wire, e2e=False)
    assert status.therapy_control_state is TherapyControlState.RUN
    assert status.operational_state is OperationalState.READY
    assert float(status.reservoir_remaining_u) == 150.5
    assert status.reservoir_attached
    assert encode_status(status, e2e_counter=None) == wire
    with pytest.raises(CodecError):
        decode_status(bytes.fromhex("5096e1f501"), e2e=False)  # 0x50 is no therapy state


def test_status_reader_request():
    req = StatusReaderRequest(StatusReaderOpcode.GET_ACTIVE_BOLUS_IDS)
    assert encode_status_reader_request(req, e2e_counter=None) == bytes.fromhex("3003")


def test_history_bolus_delivered_vector():
    event = HistoryEvent(
        HistoryEventType.BOLUS_DELIVERED_PART_1,
        sequence=1000,
        relative_offset_s=60,
        data=BolusDeliveredPart1(7, BolusType.FAST, MderNumber(235, -2), MderNumber(0), 0),
    )
    # type 0x0069; seq 1000 = E8 03 00 00; offset 60 = 3C 00; id 7; fast 0x33; EB E0; 0; 0
    assert encode_history(event, e2e_counter=None) == bytes.fromhex(
        "6900e80300003c00070033ebe000000000"
    )
    assert decode_history(encode_history(event, e2e_counter=1), e2e=True).data == event.data


sfloat_parts = st.builds(MderNumber, st.integers(-2045, 2045), st.integers(-8, 7))
# SFLOAT holds every 0.01 U step up to 20.45 exactly
amounts = st.decimals(min_value=0, max_value=Decimal("20.45"), places=2).map(float)


@st.composite
def commands(draw):
    kind = draw(st.sampled_from(["state", "tbr", "cancel_tbr", "bolus", "cancel_bolus"]))
    if kind == "state":
        return SetTherapyControlState(draw(st.sampled_from(TherapyControlState)))
    if kind == "tbr":
        return SetTbr(
            draw(st.sampled_from([TbrType.ABSOLUTE, TbrType.RELATIVE])),
            draw(amounts),
            draw(st.integers(1, 0xFFFF)),
            draw(st.none() | st.sampled_from(DeliveryContext)),
            draw(st.none() | st.integers(0, 255)),
            draw(st.booleans()),
        )
    if kind == "cancel_tbr":
        return CancelTbr()
    if kind == "cancel_bolus":
        return CancelBolus(draw(st.integers(0, 0xFFFF)))
    bolus_type = draw(st.sampled_from([BolusType.FAST, BolusType.EXTENDED, BolusType.MULTIWAVE]))
    fast = 0.0 if bolus_type is BolusType.EXTENDED else draw(amounts)
    extended = 0.0 if bolus_type is BolusType.FAST else draw(amounts)
    duration = 0 if bolus_type is BolusType.FAST else draw(st.integers(1, 480))
    return SetBolus(
        bolus_type, fast, extended, duration,
        draw(st.none() | st.sampled_from(ActivationType)),
        draw(st.none() | st.integers(0, 0xFFFF)),
        draw(st.none() | st.integers(0, 255)),
        draw(st.booleans()), draw(st.booleans()),
    )  # fmt: skip


@settings(deadline=None)
@given(commands(), st.none() | st.integers(0, 255))
def test_command_round_trip(cmd, counter):
    wire = encode_command(cmd, e2e_counter=counter)
    assert decode_command(wire, e2e=counter is not None) == (cmd, counter)


history_events = st.one_of(
    st.builds(
        HistoryEvent,
        st.just(HistoryEventType.BOLUS_DELIVERED_PART_2),
        st.integers(0, 2**32 - 1),
        st.integers(0, 0xFFFF),
        st.builds(
            BolusDeliveredPart2,
            st.integers(0, 2**32 - 1),
            st.none() | st.sampled_from(ActivationType),
            st.none() | st.sampled_from(BolusEndReason),
            st.none() | st.integers(0, 0xFFFF),
        ),
    ),
    st.builds(
        HistoryEvent,
        st.just(HistoryEventType.TBR_ADJUSTMENT_STARTED),
        st.integers(0, 2**32 - 1),
        st.integers(0, 0xFFFF),
        st.builds(
            TbrStarted,
            st.sampled_from(TbrType),
            sfloat_parts,
            st.integers(0, 0xFFFF),
            st.none() | st.integers(0, 255),
        ),
    ),
    st.builds(
        HistoryEvent,
        st.just(HistoryEventType.TBR_ADJUSTMENT_ENDED),
        st.integers(0, 2**32 - 1),
        st.integers(0, 0xFFFF),
        st.builds(
            TbrEnded,
            st.sampled_from(TbrType),
            st.integers(0, 0xFFFF),
            st.sampled_from(TbrEndReason),
            st.none() | st.integers(0, 255),
            st.none() | st.integers(0, 0xFFFF),
        ),
    ),
    st.builds(
        HistoryEvent,
        st.just(0x0303),
        st.integers(0, 2**32 - 1),
        st.integers(0, 0xFFFF),
        st.binary(max_size=8),
    ),
)


@settings(deadline=None)
@given(history_events, st.none() | st.integers(0, 255))
def test_history_round_trip(event, counter):
    decoded = decode_history(encode_history(event, e2e_counter=counter), e2e=counter is not None)
    assert decoded.data == event.data
    assert (decoded.event_type, decoded.sequence, decoded.relative_offset_s) == (
        event.event_type,
        event.sequence,
        event.relative_offset_s,
    )
    assert decoded.e2e_counter == counter

"""Bluetooth SIG Insulin Delivery Service (IDS, 0x183A) codecs: status, control points, history.

Op codes and enumerations in IDS are Hamming-distance-separated values (0x0F, 0x33, 0x3C, 0x55,
...), so a flipped bit never turns one command into another. When the IDD Features say E2E
protection is supported, every control-point and status value ends with an E2E-Counter
(uint8) and an E2E-CRC (uint16, CRC-16/MCRF4XX over everything before it, counter included).
docs/edge.md names the source of every value. Decoders raise only `CodecError`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TypeAlias, TypeVar

from edge.ble import _reader as w
from edge.ble._reader import Reader
from edge.ble.crc import append_crc, split_and_check_crc
from edge.ble.errors import CodecError
from edge.ble.mder import MderNumber, decode_sfloat, encode_sfloat

__all__ = [
    "IDD_COMMAND_CP_UUID16",
    "IDD_COMMAND_DATA_UUID16",
    "IDD_HISTORY_DATA_UUID16",
    "IDD_STATUS_READER_CP_UUID16",
    "IDD_STATUS_UUID16",
    "IDS_SERVICE_UUID16",
    "ActivationType",
    "BolusDeliveredPart1",
    "BolusDeliveredPart2",
    "BolusEndReason",
    "BolusType",
    "CancelBolus",
    "CancelTbr",
    "CommandOpcode",
    "CommandResponse",
    "DeliveryContext",
    "HistoryEvent",
    "HistoryEventType",
    "IddStatus",
    "OperationalState",
    "ResponseCode",
    "SetBolus",
    "SetTbr",
    "SetTherapyControlState",
    "StatusReaderOpcode",
    "StatusReaderRequest",
    "TbrEndReason",
    "TbrEnded",
    "TbrStarted",
    "TbrType",
    "TherapyControlState",
    "decode_command",
    "decode_command_response",
    "decode_history",
    "decode_status",
    "encode_command",
    "encode_command_response",
    "encode_history",
    "encode_status",
    "encode_status_reader_request",
]

IDS_SERVICE_UUID16 = 0x183A
# characteristic UUIDs (SIG assigned numbers)
IDD_STATUS_CHANGED_UUID16 = 0x2B20
IDD_STATUS_UUID16 = 0x2B21
IDD_ANNUNCIATION_STATUS_UUID16 = 0x2B22
IDD_FEATURES_UUID16 = 0x2B23
IDD_STATUS_READER_CP_UUID16 = 0x2B24
IDD_COMMAND_CP_UUID16 = 0x2B25
IDD_COMMAND_DATA_UUID16 = 0x2B26
IDD_RACP_UUID16 = 0x2B27
IDD_HISTORY_DATA_UUID16 = 0x2B28


def _wrap(payload: bytes, e2e_counter: int | None) -> bytes:
    if e2e_counter is None:
        return payload
    return append_crc(payload + w.u8(e2e_counter))


def _unwrap(data: bytes, e2e: bool, what: str) -> tuple[bytes, int | None]:
    if not isinstance(data, bytes | bytearray):
        raise CodecError(f"{what}: expected bytes")
    if not e2e:
        return bytes(data), None
    body = split_and_check_crc(bytes(data), what)
    if not body:
        raise CodecError(f"{what}: missing E2E-Counter")
    return body[:-1], body[-1]


_E = TypeVar("_E", bound=enum.IntEnum)


def _enum(cls: type[_E], value: int, what: str) -> _E:
    try:
        return cls(value)
    except ValueError as exc:
        raise CodecError(f"{what}: unknown {cls.__name__} 0x{value:X}") from exc


class TherapyControlState(enum.IntEnum):
    UNDETERMINED = 0x0F
    STOP = 0x33
    PAUSE = 0x3C  # "suspend" in pump language
    RUN = 0x55


class OperationalState(enum.IntEnum):
    UNDETERMINED = 0x0F
    OFF = 0x33
    STANDBY = 0x3C
    PREPARING = 0x55
    PRIMING = 0x5A
    WAITING = 0x66
    READY = 0x96


class TbrType(enum.IntEnum):
    UNDETERMINED = 0x0F
    ABSOLUTE = 0x33  # value in IU/h
    RELATIVE = 0x3C  # dimensionless factor


class DeliveryContext(enum.IntEnum):
    UNDETERMINED = 0x0F
    DEVICE_BASED = 0x33
    REMOTE_CONTROL = 0x3C
    AP_CONTROLLER = 0x55


class BolusType(enum.IntEnum):
    UNDETERMINED = 0x0F
    FAST = 0x33
    EXTENDED = 0x3C
    MULTIWAVE = 0x55


class ActivationType(enum.IntEnum):
    UNDETERMINED = 0x0F
    MANUAL = 0x33
    RECOMMENDED = 0x3C
    MANUALLY_CHANGED_RECOMMENDED = 0x55
    COMMANDED = 0x5A


class ResponseCode(enum.IntEnum):
    SUCCESS = 0x0F
    OP_CODE_NOT_SUPPORTED = 0x70
    INVALID_OPERAND = 0x71
    PROCEDURE_NOT_COMPLETED = 0x72
    PARAMETER_OUT_OF_RANGE = 0x73
    PROCEDURE_NOT_APPLICABLE = 0x74
    PLAUSIBILITY_CHECK_FAILED = 0x75
    MAXIMUM_BOLUS_NUMBER_REACHED = 0x76


class CommandOpcode(enum.IntEnum):
    """IDD Command Control Point op codes (uint16) used here."""

    RESPONSE_CODE = 0x0F55
    SET_THERAPY_CONTROL_STATE = 0x0F5A
    SET_TBR_ADJUSTMENT = 0x0FFF
    CANCEL_TBR_ADJUSTMENT = 0x1111
    SET_BOLUS = 0x114B
    SET_BOLUS_RESPONSE = 0x1177
    CANCEL_BOLUS = 0x1178
    CANCEL_BOLUS_RESPONSE = 0x1187


class StatusReaderOpcode(enum.IntEnum):
    """IDD Status Reader Control Point op codes (uint16)."""

    RESPONSE_CODE = 0x0303
    RESET_STATUS = 0x030C
    GET_ACTIVE_BOLUS_IDS = 0x0330
    GET_ACTIVE_BOLUS_IDS_RESPONSE = 0x033F
    GET_ACTIVE_BOLUS_DELIVERY = 0x0356
    GET_ACTIVE_BASAL_RATE_DELIVERY = 0x0365
    GET_TOTAL_DAILY_INSULIN_STATUS = 0x0395
    GET_COUNTER = 0x03A6
    GET_DELIVERED_INSULIN = 0x03C0
    GET_INSULIN_ON_BOARD = 0x03F3


# ---------------------------------------------------------------- IDD Status


@dataclass(frozen=True, slots=True)
class IddStatus:
    therapy_control_state: TherapyControlState
    operational_state: OperationalState
    reservoir_remaining_u: MderNumber
    reservoir_attached: bool
    e2e_counter: int | None = None


def encode_status(s: IddStatus, *, e2e_counter: int | None) -> bytes:
    payload = (
        w.u8(s.therapy_control_state)
        + w.u8(s.operational_state)
        + encode_sfloat(s.reservoir_remaining_u)
        + w.u8(1 if s.reservoir_attached else 0)
    )
    return _wrap(payload, e2e_counter)


def decode_status(data: bytes, *, e2e: bool) -> IddStatus:
    payload, counter = _unwrap(data, e2e, "IDD Status")
    r = Reader(payload, "IDD Status")
    tcs = _enum(TherapyControlState, r.u8(), "IDD Status")
    ops = _enum(OperationalState, r.u8(), "IDD Status")
    reservoir = decode_sfloat(r.take(2))
    flags = r.u8()
    r.end()
    if flags & ~0x01:
        raise CodecError(f"IDD Status: reserved flag bits set (0x{flags:02X})")
    return IddStatus(tcs, ops, reservoir, bool(flags & 0x01), counter)


# ---------------------------------------------------------------- IDD Status Reader CP


@dataclass(frozen=True, slots=True)
class StatusReaderRequest:
    opcode: StatusReaderOpcode
    operand: bytes = b""


def encode_status_reader_request(req: StatusReaderRequest, *, e2e_counter: int | None) -> bytes:
    return _wrap(w.u16(req.opcode) + req.operand, e2e_counter)


# ---------------------------------------------------------------- IDD Command CP


@dataclass(frozen=True, slots=True)
class SetTherapyControlState:
    state: TherapyControlState


@dataclass(frozen=True, slots=True)
class SetTbr:
    """Set TBR Adjustment. Absolute type: `value` in U/h; relative: a factor (1.0 = 100 %)."""

    tbr_type: TbrType
    value: float
    duration_min: int
    context: DeliveryContext | None = None
    template_number: int | None = None
    change_running: bool = False


@dataclass(frozen=True, slots=True)
class CancelTbr:
    pass


@dataclass(frozen=True, slots=True)
class SetBolus:
    """Set Bolus: fast (immediate) and extended amounts in U, extended over `duration_min`."""

    bolus_type: BolusType
    fast_amount_u: float
    extended_amount_u: float
    duration_min: int
    activation_type: ActivationType | None = None
    delay_time_min: int | None = None
    template_number: int | None = None
    reason_correction: bool = False
    reason_meal: bool = False


@dataclass(frozen=True, slots=True)
class CancelBolus:
    bolus_id: int


Command: TypeAlias = SetTherapyControlState | SetTbr | CancelTbr | SetBolus | CancelBolus


def _check_bolus(b: SetBolus) -> None:
    if b.bolus_type is BolusType.FAST and (b.extended_amount_u != 0 or b.duration_min != 0):
        raise CodecError("a fast bolus has no extended amount or duration")
    if b.bolus_type is BolusType.EXTENDED and b.fast_amount_u != 0:
        raise CodecError("an extended bolus has no fast amount")
    if b.bolus_type in (BolusType.EXTENDED, BolusType.MULTIWAVE) and b.duration_min <= 0:
        raise CodecError("an extended or multiwave bolus needs a duration")
    if b.bolus_type is BolusType.UNDETERMINED:
        raise CodecError("bolus type must be fast, extended or multiwave")
    if b.fast_amount_u < 0 or b.extended_amount_u < 0:
        raise CodecError("bolus amounts cannot be negative")


def _dose(value: float) -> bytes:
    # An insulin amount or rate is never rounded on the way to the pump: 20.46 U/h would
    # otherwise become 20.5 U/h. Unrepresentable values are refused.
    return encode_sfloat(value, exact_only=True)


def encode_command(cmd: Command, *, e2e_counter: int | None) -> bytes:
    """An IDD Command Control Point write."""
    if isinstance(cmd, SetTherapyControlState):
        payload = w.u16(CommandOpcode.SET_THERAPY_CONTROL_STATE) + w.u8(cmd.state)
    elif isinstance(cmd, SetTbr):
        if cmd.tbr_type is TbrType.UNDETERMINED or cmd.value < 0 or cmd.duration_min <= 0:
            raise CodecError("TBR needs a type, a non-negative value and a positive duration")
        flags = (
            (0x01 if cmd.template_number is not None else 0)
            | (0x02 if cmd.context is not None else 0)
            | (0x04 if cmd.change_running else 0)
        )
        payload = (
            w.u16(CommandOpcode.SET_TBR_ADJUSTMENT)
            + w.u8(flags)
            + w.u8(cmd.tbr_type)
            + _dose(cmd.value)
            + w.u16(cmd.duration_min)
        )
        if cmd.template_number is not None:
            payload += w.u8(cmd.template_number)
        if cmd.context is not None:
            payload += w.u8(cmd.context)
    elif isinstance(cmd, CancelTbr):
        payload = w.u16(CommandOpcode.CANCEL_TBR_ADJUSTMENT)
    elif isinstance(cmd, SetBolus):
        _check_bolus(cmd)
        flags = (
            (0x01 if cmd.delay_time_min is not None else 0)
            | (0x02 if cmd.template_number is not None else 0)
            | (0x04 if cmd.activation_type is not None else 0)
            | (0x08 if cmd.reason_correction else 0)
            | (0x10 if cmd.reason_meal else 0)
        )
        payload = (
            w.u16(CommandOpcode.SET_BOLUS)
            + w.u8(flags)
            + w.u8(cmd.bolus_type)
            + _dose(cmd.fast_amount_u)
            + _dose(cmd.extended_amount_u)
            + w.u16(cmd.duration_min)
        )
        if cmd.delay_time_min is not None:
            payload += w.u16(cmd.delay_time_min)
        if cmd.template_number is not None:
            payload += w.u8(cmd.template_number)
        if cmd.activation_type is not None:
            payload += w.u8(cmd.activation_type)
    elif isinstance(cmd, CancelBolus):
        payload = w.u16(CommandOpcode.CANCEL_BOLUS) + w.u16(cmd.bolus_id)
    else:  # pragma: no cover - exhaustive over Command
        raise CodecError(f"unsupported command {cmd!r}")
    return _wrap(payload, e2e_counter)


def _finite(n: MderNumber, what: str) -> float:
    if not n.is_finite:
        raise CodecError(f"{what} is {n.special.value if n.special else '?'}, not a number")
    return float(n.decimal)


def decode_command(data: bytes, *, e2e: bool) -> tuple[Command, int | None]:
    """Parse a Command Control Point write (the pump side; used by the simulator and tests)."""
    payload, counter = _unwrap(data, e2e, "IDD Command CP")
    r = Reader(payload, "IDD Command CP")
    op = _enum(CommandOpcode, r.u16(), "IDD Command CP")
    cmd: Command
    if op is CommandOpcode.SET_THERAPY_CONTROL_STATE:
        cmd = SetTherapyControlState(_enum(TherapyControlState, r.u8(), "therapy state"))
    elif op is CommandOpcode.SET_TBR_ADJUSTMENT:
        flags = r.u8()
        if flags & ~0x07:
            raise CodecError("Set TBR: reserved flag bits set")
        tbr_type = _enum(TbrType, r.u8(), "TBR type")
        value = _finite(decode_sfloat(r.take(2)), "TBR value")
        duration = r.u16()
        template = r.u8() if flags & 0x01 else None
        context = _enum(DeliveryContext, r.u8(), "context") if flags & 0x02 else None
        cmd = SetTbr(tbr_type, value, duration, context, template, bool(flags & 0x04))
    elif op is CommandOpcode.CANCEL_TBR_ADJUSTMENT:
        cmd = CancelTbr()
    elif op is CommandOpcode.SET_BOLUS:
        flags = r.u8()
        if flags & ~0x1F:
            raise CodecError("Set Bolus: reserved flag bits set")
        bolus_type = _enum(BolusType, r.u8(), "bolus type")
        fast = _finite(decode_sfloat(r.take(2)), "bolus fast amount")
        extended = _finite(decode_sfloat(r.take(2)), "bolus extended amount")
        duration = r.u16()
        delay = r.u16() if flags & 0x01 else None
        template = r.u8() if flags & 0x02 else None
        activation = _enum(ActivationType, r.u8(), "activation") if flags & 0x04 else None
        cmd = SetBolus(
            bolus_type, fast, extended, duration, activation, delay, template,
            bool(flags & 0x08), bool(flags & 0x10),
        )  # fmt: skip
    elif op is CommandOpcode.CANCEL_BOLUS:
        cmd = CancelBolus(r.u16())
    else:
        raise CodecError(f"IDD Command CP: {op.name} is a response, not a command")
    r.end()
    return cmd, counter


@dataclass(frozen=True, slots=True)
class CommandResponse:
    """Response Code, Set Bolus Response or Cancel Bolus Response (CP indication or Data)."""

    opcode: CommandOpcode
    request_opcode: int | None = None
    response_code: ResponseCode | None = None
    bolus_id: int | None = None
    e2e_counter: int | None = None

    @property
    def succeeded(self) -> bool:
        if self.opcode is CommandOpcode.RESPONSE_CODE:
            return self.response_code is ResponseCode.SUCCESS
        return self.bolus_id is not None


def encode_command_response(resp: CommandResponse, *, e2e_counter: int | None) -> bytes:
    payload = w.u16(resp.opcode)
    if resp.opcode is CommandOpcode.RESPONSE_CODE:
        if resp.request_opcode is None or resp.response_code is None:
            raise CodecError("Response Code needs request_opcode and response_code")
        payload += w.u16(resp.request_opcode) + w.u8(resp.response_code)
    elif resp.opcode in (CommandOpcode.SET_BOLUS_RESPONSE, CommandOpcode.CANCEL_BOLUS_RESPONSE):
        if resp.bolus_id is None:
            raise CodecError(f"{resp.opcode.name} needs bolus_id")
        payload += w.u16(resp.bolus_id)
    else:
        raise CodecError(f"{resp.opcode.name} is not a response")
    return _wrap(payload, e2e_counter)


def decode_command_response(data: bytes, *, e2e: bool) -> CommandResponse:
    payload, counter = _unwrap(data, e2e, "IDD Command response")
    r = Reader(payload, "IDD Command response")
    op = _enum(CommandOpcode, r.u16(), "IDD Command response")
    if op is CommandOpcode.RESPONSE_CODE:
        request_op = r.u16()
        code = _enum(ResponseCode, r.u8(), "response code")
        r.end()
        return CommandResponse(op, request_op, code, e2e_counter=counter)
    if op in (CommandOpcode.SET_BOLUS_RESPONSE, CommandOpcode.CANCEL_BOLUS_RESPONSE):
        bolus_id = r.u16()
        r.end()
        return CommandResponse(op, bolus_id=bolus_id, e2e_counter=counter)
    raise CodecError(f"IDD Command response: {op.name} is not a response")


# ---------------------------------------------------------------- IDD History Data


class HistoryEventType(enum.IntEnum):
    REFERENCE_TIME = 0x000F
    BOLUS_PROGRAMMED_PART_1 = 0x005A
    BOLUS_PROGRAMMED_PART_2 = 0x0066
    BOLUS_DELIVERED_PART_1 = 0x0069
    BOLUS_DELIVERED_PART_2 = 0x0096
    DELIVERED_BASAL_RATE_CHANGED = 0x0099
    TBR_ADJUSTMENT_STARTED = 0x00A5
    TBR_ADJUSTMENT_ENDED = 0x00AA
    TBR_ADJUSTMENT_CHANGED = 0x00C3
    THERAPY_CONTROL_STATE_CHANGED = 0x0303
    OPERATIONAL_STATE_CHANGED = 0x030C
    RESERVOIR_REMAINING_AMOUNT_CHANGED = 0x0330


class BolusEndReason(enum.IntEnum):
    UNDETERMINED = 0x0F
    PROGRAMMED_DURATION_OVER = 0x33
    CANCELED = 0x3C
    ERROR_ABORT = 0x55


class TbrEndReason(enum.IntEnum):
    UNDETERMINED = 0x0F
    PROGRAMMED_DURATION_OVER = 0x33
    CANCELED = 0x3C
    ERROR_ABORT = 0x55


@dataclass(frozen=True, slots=True)
class BolusDeliveredPart1:
    bolus_id: int
    bolus_type: BolusType
    fast_amount_u: MderNumber
    extended_amount_u: MderNumber
    duration_min: int


@dataclass(frozen=True, slots=True)
class BolusDeliveredPart2:
    start_time_offset_s: int
    activation_type: ActivationType | None = None
    end_reason: BolusEndReason | None = None
    annunciation_id: int | None = None


@dataclass(frozen=True, slots=True)
class TbrStarted:
    tbr_type: TbrType
    value: MderNumber
    duration_min: int
    template_number: int | None = None


@dataclass(frozen=True, slots=True)
class TbrEnded:
    tbr_type: TbrType
    effective_duration_min: int
    end_reason: TbrEndReason
    template_number: int | None = None
    annunciation_id: int | None = None


EventData: TypeAlias = BolusDeliveredPart1 | BolusDeliveredPart2 | TbrStarted | TbrEnded | bytes


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    """One IDD History Data record; `data` is raw bytes for event types not decoded here."""

    event_type: int
    sequence: int
    relative_offset_s: int
    data: EventData
    e2e_counter: int | None = None


def _encode_event_data(event_type: int, d: EventData) -> bytes:
    if isinstance(d, bytes):
        return d
    if isinstance(d, BolusDeliveredPart1) and event_type == HistoryEventType.BOLUS_DELIVERED_PART_1:
        return (
            w.u16(d.bolus_id)
            + w.u8(d.bolus_type)
            + encode_sfloat(d.fast_amount_u)
            + encode_sfloat(d.extended_amount_u)
            + w.u16(d.duration_min)
        )
    if isinstance(d, BolusDeliveredPart2) and event_type == HistoryEventType.BOLUS_DELIVERED_PART_2:
        flags = (
            (0x01 if d.activation_type is not None else 0)
            | (0x02 if d.end_reason is not None else 0)
            | (0x04 if d.annunciation_id is not None else 0)
        )
        out = w.u8(flags) + w.u32(d.start_time_offset_s)
        if d.activation_type is not None:
            out += w.u8(d.activation_type)
        if d.end_reason is not None:
            out += w.u8(d.end_reason)
        if d.annunciation_id is not None:
            out += w.u16(d.annunciation_id)
        return out
    if isinstance(d, TbrStarted) and event_type == HistoryEventType.TBR_ADJUSTMENT_STARTED:
        flags = 0x01 if d.template_number is not None else 0
        out = w.u8(flags) + w.u8(d.tbr_type) + encode_sfloat(d.value) + w.u16(d.duration_min)
        if d.template_number is not None:
            out += w.u8(d.template_number)
        return out
    if isinstance(d, TbrEnded) and event_type == HistoryEventType.TBR_ADJUSTMENT_ENDED:
        flags = (0x01 if d.template_number is not None else 0) | (
            0x02 if d.annunciation_id is not None else 0
        )
        out = w.u8(flags) + w.u8(d.tbr_type) + w.u16(d.effective_duration_min) + w.u8(d.end_reason)
        if d.template_number is not None:
            out += w.u8(d.template_number)
        if d.annunciation_id is not None:
            out += w.u16(d.annunciation_id)
        return out
    raise CodecError(f"event data {type(d).__name__} does not match event type 0x{event_type:04X}")


def encode_history(e: HistoryEvent, *, e2e_counter: int | None) -> bytes:
    payload = (
        w.u16(e.event_type)
        + w.u32(e.sequence)
        + w.u16(e.relative_offset_s)
        + _encode_event_data(e.event_type, e.data)
    )
    return _wrap(payload, e2e_counter)


def _decode_event_data(event_type: int, r: Reader) -> EventData:
    if event_type == HistoryEventType.BOLUS_DELIVERED_PART_1:
        return BolusDeliveredPart1(
            bolus_id=r.u16(),
            bolus_type=_enum(BolusType, r.u8(), "bolus type"),
            fast_amount_u=decode_sfloat(r.take(2)),
            extended_amount_u=decode_sfloat(r.take(2)),
            duration_min=r.u16(),
        )
    if event_type == HistoryEventType.BOLUS_DELIVERED_PART_2:
        flags = r.u8()
        if flags & ~0x07:
            raise CodecError("Bolus Delivered part 2: reserved flag bits set")
        start = r.u32()
        activation = _enum(ActivationType, r.u8(), "activation") if flags & 0x01 else None
        end_reason = _enum(BolusEndReason, r.u8(), "end reason") if flags & 0x02 else None
        annunciation = r.u16() if flags & 0x04 else None
        return BolusDeliveredPart2(start, activation, end_reason, annunciation)
    if event_type == HistoryEventType.TBR_ADJUSTMENT_STARTED:
        flags = r.u8()
        if flags & ~0x01:
            raise CodecError("TBR Adjustment Started: reserved flag bits set")
        tbr_type = _enum(TbrType, r.u8(), "TBR type")
        value = decode_sfloat(r.take(2))
        duration = r.u16()
        template = r.u8() if flags & 0x01 else None
        return TbrStarted(tbr_type, value, duration, template)
    if event_type == HistoryEventType.TBR_ADJUSTMENT_ENDED:
        flags = r.u8()
        if flags & ~0x03:
            raise CodecError("TBR Adjustment Ended: reserved flag bits set")
        tbr_type = _enum(TbrType, r.u8(), "TBR type")
        duration = r.u16()
        tbr_end = _enum(TbrEndReason, r.u8(), "TBR end reason")
        template = r.u8() if flags & 0x01 else None
        annunciation = r.u16() if flags & 0x02 else None
        return TbrEnded(tbr_type, duration, tbr_end, template, annunciation)
    return r.take(r.remaining)


def decode_history(data: bytes, *, e2e: bool) -> HistoryEvent:
    payload, counter = _unwrap(data, e2e, "IDD History Data")
    r = Reader(payload, "IDD History Data")
    event_type = r.u16()
    sequence = r.u32()
    offset = r.u16()
    event_data = _decode_event_data(event_type, r)
    r.end()
    return HistoryEvent(event_type, sequence, offset, event_data, counter)

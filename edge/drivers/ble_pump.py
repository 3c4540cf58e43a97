"""`PumpDriver` for a Bluetooth SIG Insulin Delivery Service (0x183A) pump over a `GattTransport`.

A command is one write to the IDD Command Control Point (with the E2E-Counter and E2E-CRC)
and one answer, an indication on the same characteristic. How it ends:

- the pump's answer is SUCCESS (or a Set Bolus Response with a bolus id) → `CommandAck`;
- the pump's answer is another response code → `PumpRefusedError` (nothing delivered);
- no write ever left the hub (no link, or the command cannot be encoded exactly) →
  `CommandNotSentError`, a `PumpRefusedError`: nothing can have been delivered;
- the write failed, the link dropped, the answer failed its CRC or did not come within
  `response_timeout_s` → `DeliveryUnconfirmedError`. The driver never guesses: the pump may
  have executed the command. The agent marks it uncertain until `history_since` reconciles it.
  After a timeout the driver also drops the link, so a late answer to this command can never
  be taken for the answer to the next one (indications of the old bearer die with it).

Status combines IDD Status, two Status Reader CP requests (active basal rate delivery, active
bolus ids), the Current Time (0x2A2B, taken as UTC) and Battery Level (0x2A19). History is read
with the IDD Record Access Control Point (report records ≥ sequence) into History Data
notifications; a read is accepted whole or not at all.

Codecs for values edge/ble/ids.py does not cover yet (Status Reader responses, IDD RACP,
Reference Time, Therapy Control State Changed, Bolus Programmed, Exact Time 256) are below;
sources in docs/edge.md.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from edge.ble import ids
from edge.ble.crc import append_crc, split_and_check_crc
from edge.ble.errors import CodecError
from edge.ble.mder import MderNumber, decode_float, decode_sfloat, encode_float, encode_sfloat
from edge.ble.transport import GattTransport, TransportError, uuid16
from edge.drivers.base import (
    BolusShape,
    CommandAck,
    DeliveryUnconfirmedError,
    PumpEventKind,
    PumpHistoryEvent,
    PumpRefusedError,
    PumpStatusSnapshot,
)
from services.runtime.clock import Clock

__all__ = [
    "BATTERY_LEVEL_UUID16",
    "CURRENT_TIME_UUID16",
    "ActiveBasalRateDelivery",
    "BlePumpDriver",
    "CommandNotSentError",
    "IddRacpOpcode",
    "IddRacpOperator",
    "PumpDriverError",
    "ReferenceTime",
    "decode_active_basal_rate_delivery",
    "decode_active_bolus_ids",
    "decode_exact_time",
    "decode_idd_racp_request",
    "decode_idd_racp_response",
    "decode_reference_time",
    "encode_active_basal_rate_delivery",
    "encode_active_bolus_ids",
    "encode_bolus_programmed_part1",
    "encode_exact_time",
    "encode_idd_racp_request",
    "encode_idd_racp_response",
    "encode_reference_time",
    "encode_status_reader_response_code",
    "encode_therapy_state_changed",
]

log = logging.getLogger(__name__)

CURRENT_TIME_UUID16 = 0x2A2B
BATTERY_LEVEL_UUID16 = 0x2A19
GET_ACTIVE_BOLUS_IDS_RESPONSE = 0x033F
GET_ACTIVE_BASAL_RATE_DELIVERY_RESPONSE = 0x036A


class CommandNotSentError(PumpRefusedError):
    """The command never left the hub (no link, or not encodable); nothing was delivered."""


class PumpDriverError(RuntimeError):
    """The pump's answer to a status or history request was unusable (CRC, format, refusal)."""


# ---------------------------------------------------------------- small codecs


def _wrap(payload: bytes, counter: int | None) -> bytes:
    return payload if counter is None else append_crc(payload + bytes([counter & 0xFF]))


def _unwrap(data: bytes, e2e: bool, what: str) -> bytes:
    if not e2e:
        return bytes(data)
    body = split_and_check_crc(bytes(data), what)
    if not body:
        raise CodecError(f"{what}: missing E2E-Counter")
    return body[:-1]


def encode_exact_time(t: datetime) -> bytes:
    """Current Time (Exact Time 256 + adjust reason) of an aware datetime, in UTC."""
    u = t.astimezone(UTC)
    return (
        u.year.to_bytes(2, "little")
        + bytes([u.month, u.day, u.hour, u.minute, u.second, u.isoweekday()])
        + bytes([u.microsecond * 256 // 1_000_000, 0])
    )


def decode_exact_time(data: bytes) -> datetime:
    if len(data) != 10:
        raise CodecError(f"Current Time: expected 10 octets, got {len(data)}")
    try:
        t = datetime(
            int.from_bytes(data[0:2], "little"), data[2], data[3], data[4], data[5], data[6],
            tzinfo=UTC,
        )  # fmt: skip
    except ValueError as exc:
        raise CodecError(f"Current Time: invalid date-time: {exc}") from exc
    return t + timedelta(microseconds=data[8] * 1_000_000 // 256)


@dataclass(frozen=True, slots=True)
class ActiveBasalRateDelivery:
    template_number: int
    scheduled_u_per_h: Decimal
    tbr_type: ids.TbrType | None = None
    tbr_value: Decimal | None = None  # U/h when absolute
    tbr_programmed_min: int = 0
    tbr_remaining_min: int = 0
    context: ids.DeliveryContext | None = None


def encode_active_basal_rate_delivery(a: ActiveBasalRateDelivery, *, counter: int | None) -> bytes:
    tbr = a.tbr_type is not None
    flags = (0x01 if tbr else 0) | (0x04 if a.context is not None else 0)
    out = (
        GET_ACTIVE_BASAL_RATE_DELIVERY_RESPONSE.to_bytes(2, "little")
        + bytes([flags, a.template_number])
        + encode_float(a.scheduled_u_per_h, exact_only=True)
    )
    if a.tbr_type is not None:
        out += bytes([a.tbr_type]) + encode_float(a.tbr_value or 0, exact_only=True)
        out += a.tbr_programmed_min.to_bytes(2, "little")
        out += a.tbr_remaining_min.to_bytes(2, "little")
    if a.context is not None:
        out += bytes([a.context])
    return _wrap(out, counter)


def _enum(cls: type[enum.IntEnum], value: int, what: str) -> int:
    try:
        return int(cls(value))
    except ValueError as exc:
        raise CodecError(f"{what}: unknown {cls.__name__} 0x{value:X}") from exc


def _finite(n: MderNumber, what: str) -> Decimal:
    if not n.is_finite:
        raise CodecError(f"{what} is not a number")
    return n.decimal


def decode_active_basal_rate_delivery(data: bytes, *, e2e: bool) -> ActiveBasalRateDelivery:
    p = _unwrap(data, e2e, "Active Basal Rate Delivery")
    what = "Active Basal Rate Delivery"
    if len(p) < 8 or int.from_bytes(p[0:2], "little") != GET_ACTIVE_BASAL_RATE_DELIVERY_RESPONSE:
        raise CodecError(f"{what}: not a basal rate delivery response")
    flags, template = p[2], p[3]
    if flags & ~0x07:
        raise CodecError(f"{what}: reserved flag bits set")
    scheduled = _finite(decode_float(p[4:8]), "scheduled basal rate")
    pos = 8
    tbr_type = tbr_value = None
    programmed = remaining = 0
    if flags & 0x01:
        if len(p) < pos + 9:
            raise CodecError(f"{what}: truncated TBR fields")
        tbr_type = ids.TbrType(_enum(ids.TbrType, p[pos], "TBR type"))
        tbr_value = _finite(decode_float(p[pos + 1 : pos + 5]), "TBR value")
        programmed = int.from_bytes(p[pos + 5 : pos + 7], "little")
        remaining = int.from_bytes(p[pos + 7 : pos + 9], "little")
        pos += 9
    if flags & 0x02:
        pos += 1  # TBR template number, not used
    context = None
    if flags & 0x04:
        if len(p) < pos + 1:
            raise CodecError(f"{what}: truncated context")
        context = ids.DeliveryContext(_enum(ids.DeliveryContext, p[pos], "context"))
        pos += 1
    if pos != len(p):
        raise CodecError(f"{what}: {len(p) - pos} unexpected trailing octet(s)")
    return ActiveBasalRateDelivery(
        template, scheduled, tbr_type, tbr_value, programmed, remaining, context
    )


def encode_active_bolus_ids(bolus_ids: list[int], *, counter: int | None) -> bytes:
    out = GET_ACTIVE_BOLUS_IDS_RESPONSE.to_bytes(2, "little") + bytes([len(bolus_ids)])
    return _wrap(out + b"".join(i.to_bytes(2, "little") for i in bolus_ids), counter)


def decode_active_bolus_ids(data: bytes, *, e2e: bool) -> list[int]:
    p = _unwrap(data, e2e, "Active Bolus IDs")
    if len(p) < 3 or int.from_bytes(p[0:2], "little") != GET_ACTIVE_BOLUS_IDS_RESPONSE:
        raise CodecError("Active Bolus IDs: not an active bolus ids response")
    if len(p) != 3 + 2 * p[2]:
        raise CodecError("Active Bolus IDs: length does not match the count")
    return [int.from_bytes(p[i : i + 2], "little") for i in range(3, len(p), 2)]


def encode_status_reader_response_code(
    request: int, code: ids.ResponseCode, *, counter: int | None
) -> bytes:
    out = ids.StatusReaderOpcode.RESPONSE_CODE.to_bytes(2, "little") + request.to_bytes(2, "little")
    return _wrap(out + bytes([code]), counter)


class IddRacpOpcode(enum.IntEnum):
    RESPONSE_CODE = 0x0F
    REPORT_STORED_RECORDS = 0x33
    DELETE_STORED_RECORDS = 0x3C
    ABORT_OPERATION = 0x55
    REPORT_NUMBER_OF_STORED_RECORDS = 0x5A
    NUMBER_OF_STORED_RECORDS_RESPONSE = 0x66


class IddRacpOperator(enum.IntEnum):
    NULL = 0x0F
    ALL_RECORDS = 0x33
    LESS_THAN_OR_EQUAL = 0x3C
    GREATER_THAN_OR_EQUAL = 0x55
    WITHIN_RANGE = 0x5A
    FIRST_RECORD = 0x66
    LAST_RECORD = 0x69


IDD_RACP_FILTER_SEQUENCE = 0x0F
IDD_RACP_SUCCESS = 0xF0
IDD_RACP_PROCEDURE_NOT_APPLICABLE = 0x0A


def encode_idd_racp_request(since_sequence: int | None, *, counter: int | None) -> bytes:
    """Report stored records: all, or those with sequence number ≥ `since_sequence`."""
    if since_sequence is None:
        out = bytes([IddRacpOpcode.REPORT_STORED_RECORDS, IddRacpOperator.ALL_RECORDS])
    else:
        if not 0 <= since_sequence <= 0xFFFFFFFF:
            raise CodecError(f"IDD RACP: sequence {since_sequence} does not fit 32 bits")
        out = bytes(
            [
                IddRacpOpcode.REPORT_STORED_RECORDS,
                IddRacpOperator.GREATER_THAN_OR_EQUAL,
                IDD_RACP_FILTER_SEQUENCE,
            ]
        ) + since_sequence.to_bytes(4, "little")
    return _wrap(out, counter)


def decode_idd_racp_request(data: bytes, *, e2e: bool) -> tuple[int, int, int | None]:
    """(op code, operator, minimum sequence) — the pump side."""
    p = _unwrap(data, e2e, "IDD RACP")
    if len(p) < 2:
        raise CodecError("IDD RACP: request too short")
    if p[1] == IddRacpOperator.GREATER_THAN_OR_EQUAL:
        if len(p) != 7 or p[2] != IDD_RACP_FILTER_SEQUENCE:
            raise CodecError("IDD RACP: ≥ needs the sequence number filter and a uint32")
        return p[0], p[1], int.from_bytes(p[3:7], "little")
    if len(p) != 2:
        raise CodecError("IDD RACP: unexpected operand")
    return p[0], p[1], None


def encode_idd_racp_response(request: int, code: int, *, counter: int | None) -> bytes:
    return _wrap(bytes([IddRacpOpcode.RESPONSE_CODE, IddRacpOperator.NULL, request, code]), counter)


def decode_idd_racp_response(data: bytes, *, e2e: bool) -> tuple[int, int]:
    p = _unwrap(data, e2e, "IDD RACP")
    if len(p) != 4 or p[0] != IddRacpOpcode.RESPONSE_CODE or p[1] != IddRacpOperator.NULL:
        raise CodecError(f"IDD RACP: not a response code: {p.hex()}")
    return p[2], p[3]


@dataclass(frozen=True, slots=True)
class ReferenceTime:
    """Reference Time history event: later records count seconds from `base` (UTC)."""

    base: datetime
    recording_reason: int = 0x0F


def encode_reference_time(r: ReferenceTime) -> bytes:
    u = r.base.astimezone(UTC)
    return (
        bytes([r.recording_reason])
        + u.year.to_bytes(2, "little")
        + bytes([u.month, u.day, u.hour, u.minute, u.second, 0, 0])  # time zone 0, DST standard
    )


def decode_reference_time(data: bytes) -> ReferenceTime:
    if len(data) != 10:
        raise CodecError(f"Reference Time: expected 10 octets, got {len(data)}")
    tz = int.from_bytes(data[8:9], "little", signed=True)
    dst = data[9]
    if tz == -128 or dst == 255:
        raise CodecError("Reference Time: time zone or DST unknown")
    try:
        local = datetime(
            int.from_bytes(data[1:3], "little"), data[3], data[4], data[5], data[6], data[7],
            tzinfo=UTC,
        )  # fmt: skip
    except ValueError as exc:
        raise CodecError(f"Reference Time: invalid date-time: {exc}") from exc
    return ReferenceTime(local - timedelta(minutes=15 * (tz + dst)), data[0])


def encode_therapy_state_changed(
    old: ids.TherapyControlState, new: ids.TherapyControlState
) -> bytes:
    return bytes([old, new])


def encode_bolus_programmed_part1(
    bolus_id: int, bolus_type: ids.BolusType, fast_u: float, extended_u: float, duration_min: int
) -> bytes:
    return (
        bolus_id.to_bytes(2, "little")
        + bytes([bolus_type])
        + encode_sfloat(fast_u, exact_only=True)
        + encode_sfloat(extended_u, exact_only=True)
        + duration_min.to_bytes(2, "little")
    )


def _decode_bolus_programmed_part1(data: bytes) -> tuple[int, Decimal]:
    if len(data) != 9:
        raise CodecError(f"Bolus Programmed part 1: expected 9 octets, got {len(data)}")
    _enum(ids.BolusType, data[2], "bolus type")
    total = _finite(decode_sfloat(data[3:5]), "fast amount") + _finite(
        decode_sfloat(data[5:7]), "extended amount"
    )
    return int.from_bytes(data[0:2], "little"), total


# ---------------------------------------------------------------- the driver

_CMD_CP = uuid16(ids.IDD_COMMAND_CP_UUID16)
_STATUS = uuid16(ids.IDD_STATUS_UUID16)
_STATUS_READER = uuid16(ids.IDD_STATUS_READER_CP_UUID16)
_RACP = uuid16(ids.IDD_RACP_UUID16)
_HISTORY = uuid16(ids.IDD_HISTORY_DATA_UUID16)
_CURRENT_TIME = uuid16(CURRENT_TIME_UUID16)
_BATTERY = uuid16(BATTERY_LEVEL_UUID16)

# Second parts and reference times carry nothing the agent needs as a separate event.
_SKIPPED = {
    ids.HistoryEventType.REFERENCE_TIME,
    ids.HistoryEventType.BOLUS_PROGRAMMED_PART_2,
    ids.HistoryEventType.BOLUS_DELIVERED_PART_2,
}


class _Pending:
    __slots__ = ("future", "opcode")

    def __init__(self, opcode: int, future: asyncio.Future[bytes]) -> None:
        self.opcode = opcode
        self.future = future


class BlePumpDriver:
    """`PumpDriver` over an IDS peripheral with E2E protection (counter + CRC)."""

    def __init__(
        self,
        transport: GattTransport,
        *,
        clock: Clock,
        e2e: bool = True,
        response_timeout_s: float = 5.0,
        connect_timeout_s: float = 10.0,
        connect_attempts: int = 2,
        initial_counter: int = 0,
    ) -> None:
        if connect_attempts < 1 or response_timeout_s <= 0:
            raise ValueError("connect_attempts and response_timeout_s must be > 0")
        self._t = transport
        self._clock = clock
        self._e2e = e2e
        self._timeout_s = response_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._connect_attempts = connect_attempts
        self._counter = initial_counter & 0xFF
        self._ready = False
        self._lock = asyncio.Lock()
        self._cmd: _Pending | None = None
        self._reader: _Pending | None = None
        self._racp: _Pending | None = None
        self._history_frames: list[bytes] = []
        self._history: list[PumpHistoryEvent] = []
        self._history_last_seq = -1
        self._reference: ReferenceTime | None = None
        self._pump_offset = timedelta(0)  # pump clock − hub clock, from the last time read
        self.decode_errors = 0
        self.unconfirmed = 0
        transport.on_connection_change(self._on_connection_change)

    # ------------------------------------------------------------ link

    def _on_connection_change(self, up: bool) -> None:
        if up:
            return
        self._ready = False
        for pending in (self._cmd, self._reader, self._racp):
            if pending is not None and not pending.future.done():
                pending.future.set_exception(TransportError("link dropped before the answer"))

    async def _ensure_ready(self) -> None:
        if self._ready and self._t.is_connected:
            return
        last_exc: Exception | None = None
        for attempt in range(self._connect_attempts):
            try:
                if not self._t.is_connected:
                    await self._t.connect(self._connect_timeout_s)
                await self._t.subscribe(_CMD_CP, self._on_command_cp)
                await self._t.subscribe(_STATUS_READER, self._on_status_reader)
                await self._t.subscribe(_RACP, self._on_racp)
                await self._t.subscribe(_HISTORY, self._on_history)
                self._ready = True
                return
            except TransportError as exc:
                last_exc = exc
                await asyncio.sleep(min(0.05 * 2**attempt, 2.0))
        raise TransportError(f"pump link down ({last_exc})") from last_exc

    async def close(self) -> None:
        self._ready = False
        if self._t.is_connected:
            await self._t.disconnect()

    def _next_counter(self) -> int | None:
        if not self._e2e:
            return None
        self._counter = (self._counter + 1) & 0xFF
        return self._counter

    # ------------------------------------------------------------ indications

    @staticmethod
    def _deliver(pending: _Pending | None, data: bytes) -> None:
        if pending is not None and not pending.future.done():
            pending.future.set_result(bytes(data))

    def _on_command_cp(self, data: bytes) -> None:
        self._deliver(self._cmd, data)

    def _on_status_reader(self, data: bytes) -> None:
        self._deliver(self._reader, data)

    def _on_racp(self, data: bytes) -> None:
        self._deliver(self._racp, data)

    def _on_history(self, data: bytes) -> None:
        if self._racp is not None:
            self._history_frames.append(bytes(data))

    async def _request(self, uuid: str, frame: bytes, opcode: int, slot: str) -> bytes:
        """Write `frame` and wait for the indication answering it (raw bytes)."""
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        setattr(self, slot, _Pending(opcode, future))
        try:
            await self._t.write(uuid, frame, response=True)
            return await asyncio.wait_for(future, self._timeout_s)
        finally:
            setattr(self, slot, None)

    async def _drop_link(self) -> None:
        self._ready = False
        try:
            await self._t.disconnect()
        except TransportError:
            log.warning("pump disconnect after a lost answer failed", exc_info=True)

    # ------------------------------------------------------------ commands

    async def _command(self, cmd: ids.Command, *, what: str) -> ids.CommandResponse:
        opcode = _opcode_of(cmd)
        try:
            await self._ensure_ready()
        except TransportError as exc:
            raise CommandNotSentError(f"{what} not sent: {exc}") from exc
        try:
            frame = ids.encode_command(cmd, e2e_counter=self._next_counter())
        except CodecError as exc:
            raise CommandNotSentError(f"{what} not sent: {exc}") from exc
        try:
            raw = await self._request(_CMD_CP, frame, opcode, "_cmd")
        except TimeoutError as exc:
            self.unconfirmed += 1
            await self._drop_link()
            raise DeliveryUnconfirmedError(
                f"{what}: no answer from the pump within {self._timeout_s} s"
            ) from exc
        except TransportError as exc:
            self.unconfirmed += 1
            raise DeliveryUnconfirmedError(f"{what}: link failed after sending: {exc}") from exc
        try:
            resp = ids.decode_command_response(raw, e2e=self._e2e)
        except CodecError as exc:
            # The pump answered but the answer cannot be trusted: it may say either outcome.
            self.decode_errors += 1
            self.unconfirmed += 1
            await self._drop_link()
            raise DeliveryUnconfirmedError(f"{what}: answer rejected: {exc}") from exc
        answers_it = (
            resp.opcode is ids.CommandOpcode.RESPONSE_CODE and resp.request_opcode == opcode
        ) or (
            (opcode, resp.opcode)
            in (
                (ids.CommandOpcode.SET_BOLUS, ids.CommandOpcode.SET_BOLUS_RESPONSE),
                (ids.CommandOpcode.CANCEL_BOLUS, ids.CommandOpcode.CANCEL_BOLUS_RESPONSE),
            )
        )
        if not answers_it:
            self.unconfirmed += 1
            await self._drop_link()
            raise DeliveryUnconfirmedError(f"{what}: the pump's answer is for another request")
        if not resp.succeeded:
            code = resp.response_code.name if resp.response_code else "?"
            raise PumpRefusedError(f"{what} refused by the pump: {code}")
        return resp

    async def _ack(self, accepted_u: float | None = None, reference: str = "") -> CommandAck:
        try:
            pump_time = await self._read_pump_time()
        except (TransportError, CodecError):
            pump_time = self._clock.now() + self._pump_offset  # the command is confirmed anyway
        return CommandAck(pump_time=pump_time, accepted_u=accepted_u, reference=reference)

    async def set_temp_basal(self, rate_u_per_h: float, duration_min: int) -> CommandAck:
        async with self._lock:
            try:
                basal = await self._active_basal()
            except (TransportError, PumpDriverError) as exc:
                raise CommandNotSentError(f"temp basal not sent: {exc}") from exc
            cmd = ids.SetTbr(
                ids.TbrType.ABSOLUTE,
                rate_u_per_h,
                duration_min,
                context=ids.DeliveryContext.AP_CONTROLLER,
                change_running=basal.tbr_type is not None,
            )
            await self._command(cmd, what=f"temp basal {rate_u_per_h} U/h {duration_min} min")
            return await self._ack()

    async def cancel_temp_basal(self) -> CommandAck:
        async with self._lock:
            await self._command(ids.CancelTbr(), what="cancel temp basal")
            return await self._ack()

    async def bolus(self, shape: BolusShape) -> CommandAck:
        if not (
            math.isfinite(shape.insulin_u)
            and shape.insulin_u > 0
            and 0 <= shape.immediate_pct <= 100
        ):
            raise CommandNotSentError(f"bolus not sent: invalid shape {shape}")
        total = Decimal(repr(shape.insulin_u))
        fast = (total * Decimal(repr(shape.immediate_pct)) / 100).quantize(Decimal("0.01"))
        extended = total - fast
        if extended == 0:
            kind, duration = ids.BolusType.FAST, 0
        else:
            kind = ids.BolusType.EXTENDED if fast == 0 else ids.BolusType.MULTIWAVE
            duration = shape.extended_duration_min
        cmd = ids.SetBolus(
            kind, float(fast), float(extended), duration,
            activation_type=ids.ActivationType.COMMANDED,
        )  # fmt: skip
        async with self._lock:
            resp = await self._command(cmd, what=f"bolus {shape.insulin_u} U")
            reference = str(resp.bolus_id) if resp.bolus_id is not None else ""
            return await self._ack(accepted_u=float(total), reference=reference)

    async def suspend(self) -> CommandAck:
        async with self._lock:
            cmd = ids.SetTherapyControlState(ids.TherapyControlState.PAUSE)
            await self._command(cmd, what="suspend")
            return await self._ack()

    async def resume(self) -> CommandAck:
        async with self._lock:
            cmd = ids.SetTherapyControlState(ids.TherapyControlState.RUN)
            await self._command(cmd, what="resume")
            return await self._ack()

    # ------------------------------------------------------------ status

    async def _read_pump_time(self) -> datetime:
        pump_time = decode_exact_time(await self._t.read(_CURRENT_TIME))
        self._pump_offset = pump_time - self._clock.now()
        return pump_time

    async def _status_reader(self, opcode: ids.StatusReaderOpcode) -> bytes:
        frame = ids.encode_status_reader_request(
            ids.StatusReaderRequest(opcode), e2e_counter=self._next_counter()
        )
        try:
            return await self._request(_STATUS_READER, frame, opcode, "_reader")
        except TimeoutError as exc:
            raise PumpDriverError(f"no answer to {opcode.name}") from exc

    async def _active_basal(self) -> ActiveBasalRateDelivery:
        await self._ensure_ready()
        raw = await self._status_reader(ids.StatusReaderOpcode.GET_ACTIVE_BASAL_RATE_DELIVERY)
        try:
            return decode_active_basal_rate_delivery(raw, e2e=self._e2e)
        except CodecError as exc:
            self.decode_errors += 1
            raise PumpDriverError(f"active basal rate delivery unreadable: {exc}") from exc

    async def status(self) -> PumpStatusSnapshot:
        async with self._lock:
            await self._ensure_ready()
            try:
                idd = ids.decode_status(await self._t.read(_STATUS), e2e=self._e2e)
                pump_time = await self._read_pump_time()
                battery = await self._t.read(_BATTERY)
                if len(battery) != 1 or battery[0] > 100:
                    raise CodecError(f"Battery Level: invalid value {battery.hex()}")
                raw_ids = await self._status_reader(ids.StatusReaderOpcode.GET_ACTIVE_BOLUS_IDS)
                active_boluses = decode_active_bolus_ids(raw_ids, e2e=self._e2e)
            except CodecError as exc:
                self.decode_errors += 1
                raise PumpDriverError(f"pump status unreadable: {exc}") from exc
            basal = await self._active_basal()
            await self._refresh_history()
        if not idd.reservoir_remaining_u.is_finite:
            raise PumpDriverError("pump status: reservoir amount is not a number")
        absolute_tbr = basal.tbr_type is ids.TbrType.ABSOLUTE and basal.tbr_value is not None
        boluses = [e for e in self._history if e.kind is PumpEventKind.BOLUS_PROGRAMMED]
        return PumpStatusSnapshot(
            pump_time=pump_time,
            reservoir_u=float(idd.reservoir_remaining_u.decimal),
            battery_pct=float(battery[0]),
            suspended=idd.therapy_control_state is not ids.TherapyControlState.RUN,
            scheduled_basal_u_per_h=float(basal.scheduled_u_per_h),
            temp_basal_u_per_h=float(basal.tbr_value)
            if absolute_tbr and basal.tbr_value
            else (0.0 if absolute_tbr else None),
            temp_basal_remaining_min=basal.tbr_remaining_min if absolute_tbr else 0,
            bolus_in_progress=bool(active_boluses),
            last_history_sequence=self._history_last_seq,
            last_bolus_at=boluses[-1].timestamp if boluses else None,
        )

    # ------------------------------------------------------------ history

    async def history_since(self, after_sequence: int) -> list[PumpHistoryEvent]:
        async with self._lock:
            await self._ensure_ready()
            await self._refresh_history()
        return [e for e in self._history if e.sequence > after_sequence]

    async def _refresh_history(self) -> None:
        since = self._history_last_seq + 1 if self._history_last_seq >= 0 else None
        self._history_frames = []
        frame = encode_idd_racp_request(since, counter=self._next_counter())
        try:
            raw = await self._request(_RACP, frame, IddRacpOpcode.REPORT_STORED_RECORDS, "_racp")
        except TimeoutError as exc:
            raise PumpDriverError("pump history: no answer to the record request") from exc
        frames, self._history_frames = self._history_frames, []
        try:
            request, code = decode_idd_racp_response(raw, e2e=self._e2e)
            if request != IddRacpOpcode.REPORT_STORED_RECORDS or code != IDD_RACP_SUCCESS:
                raise PumpDriverError(f"pump history: request refused (0x{code:02X})")
            records = [ids.decode_history(f, e2e=self._e2e) for f in frames]
        except CodecError as exc:
            self.decode_errors += 1
            raise PumpDriverError(f"pump history rejected whole: {exc}") from exc
        self._apply_history(records)

    def _apply_history(self, records: list[ids.HistoryEvent]) -> None:
        """Map records to events; all or nothing, and no gap in the sequence numbers."""
        expected = self._history_last_seq + 1 if self._history_last_seq >= 0 else None
        reference = self._reference
        out: list[PumpHistoryEvent] = []
        for rec in records:
            if expected is not None and rec.sequence != expected:
                raise PumpDriverError(
                    f"pump history: record {rec.sequence} where {expected} was expected"
                )
            expected = rec.sequence + 1
            try:
                if rec.event_type == ids.HistoryEventType.REFERENCE_TIME:
                    if not isinstance(rec.data, bytes):  # pragma: no cover - codec keeps raw
                        raise CodecError("reference time data")
                    reference = decode_reference_time(rec.data)
                if reference is None:
                    raise CodecError(f"record {rec.sequence} precedes any reference time")
                event = _event_of(rec, reference)
            except CodecError as exc:
                self.decode_errors += 1
                raise PumpDriverError(f"pump history record {rec.sequence}: {exc}") from exc
            if event is not None:
                out.append(event)
        self._reference = reference
        self._history.extend(out)
        if records:
            self._history_last_seq = records[-1].sequence


def _event_of(rec: ids.HistoryEvent, reference: ReferenceTime) -> PumpHistoryEvent | None:
    if rec.event_type in _SKIPPED:
        return None
    at = reference.base + timedelta(seconds=rec.relative_offset_s)
    data = rec.data
    if rec.event_type == ids.HistoryEventType.BOLUS_PROGRAMMED_PART_1:
        if not isinstance(data, bytes):  # pragma: no cover - codec keeps raw
            raise CodecError("bolus programmed data")
        bolus_id, total = _decode_bolus_programmed_part1(data)
        kind = PumpEventKind.BOLUS_PROGRAMMED
        return PumpHistoryEvent(rec.sequence, at, kind, float(total), reference=str(bolus_id))
    if isinstance(data, ids.BolusDeliveredPart1):
        total = _finite(data.fast_amount_u, "fast") + _finite(data.extended_amount_u, "extended")
        return PumpHistoryEvent(
            rec.sequence, at, PumpEventKind.BOLUS_DELIVERED, float(total),
            data.duration_min, reference=str(data.bolus_id),
        )  # fmt: skip
    if isinstance(data, ids.TbrStarted):
        rate = _finite(data.value, "TBR value")
        return PumpHistoryEvent(
            rec.sequence, at, PumpEventKind.TEMP_BASAL_STARTED, float(rate), data.duration_min,
            detail=data.tbr_type.name,
        )  # fmt: skip
    if isinstance(data, ids.TbrEnded):
        return PumpHistoryEvent(
            rec.sequence, at, PumpEventKind.TEMP_BASAL_ENDED, 0.0,
            data.effective_duration_min, detail=data.end_reason.name,
        )  # fmt: skip
    if rec.event_type == ids.HistoryEventType.THERAPY_CONTROL_STATE_CHANGED:
        if not isinstance(data, bytes) or len(data) != 2:
            raise CodecError("Therapy Control State Changed: expected 2 octets")
        new = ids.TherapyControlState(_enum(ids.TherapyControlState, data[1], "therapy state"))
        kind = (
            PumpEventKind.RESUMED
            if new is ids.TherapyControlState.RUN
            else (PumpEventKind.SUSPENDED)
        )
        return PumpHistoryEvent(rec.sequence, at, kind, detail=new.name)
    return PumpHistoryEvent(rec.sequence, at, PumpEventKind.OTHER, detail=f"0x{rec.event_type:04X}")


def _opcode_of(cmd: ids.Command) -> int:
    if isinstance(cmd, ids.SetTherapyControlState):
        return ids.CommandOpcode.SET_THERAPY_CONTROL_STATE
    if isinstance(cmd, ids.SetTbr):
        return ids.CommandOpcode.SET_TBR_ADJUSTMENT
    if isinstance(cmd, ids.CancelTbr):
        return ids.CommandOpcode.CANCEL_TBR_ADJUSTMENT
    if isinstance(cmd, ids.SetBolus):
        return ids.CommandOpcode.SET_BOLUS
    return ids.CommandOpcode.CANCEL_BOLUS

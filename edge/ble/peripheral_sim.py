"""In-memory GATT peripherals for tests: a CGMS sensor and an IDS pump, no radio needed.

`SimulatedGattPeripheral` implements `GattTransport` (the client's view of a link) on top of
device-side characteristics, so the Bluetooth drivers run unchanged against it. Values are
built with the same codecs a real device's bytes would be checked with; notifications are
delivered from the event loop (never inside the write that caused them), after an optional
delay, and only while the link that was up when they were sent is still up.

Fault injection: `drop_link()`, `lose_next(uuid, n)` (the device acts, its answer is lost),
`corrupt_next(uuid, n)` (one octet flipped: the E2E-CRC no longer matches; `corrupt_next_write`
for the client's writes), `delay_s(uuid, s)`
(a late answer), `link_available = False` (connect fails).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from edge.ble import cgms, ids
from edge.ble.crc import split_and_check_crc
from edge.ble.errors import CodecError
from edge.ble.mder import MderNumber, decode_sfloat, encode_sfloat
from edge.ble.transport import (
    ConnectionCallback,
    NotConnectedError,
    NotificationCallback,
    TransportError,
    uuid16,
)
from edge.drivers import ble_cgm, ble_pump
from services.runtime.clock import Clock

__all__ = [
    "SimulatedCgmPeripheral",
    "SimulatedGattPeripheral",
    "SimulatedPumpPeripheral",
]

log = logging.getLogger(__name__)


def _num(value: float) -> MderNumber:
    """The SFLOAT a device would send for `value` (nearest representable)."""
    return decode_sfloat(encode_sfloat(value))


@dataclass
class _Characteristic:
    read: Callable[[], bytes] | None = None
    write: Callable[[bytes], None] | None = None


@dataclass
class _Faults:
    lose: dict[str, int] = field(default_factory=dict)
    corrupt: dict[str, int] = field(default_factory=dict)
    corrupt_write: dict[str, int] = field(default_factory=dict)
    delay_s: dict[str, float] = field(default_factory=dict)


class SimulatedGattPeripheral:
    """A device's GATT table plus the link to it, seen from the client as a `GattTransport`."""

    def __init__(self, name: str, *, mtu: int = 185) -> None:
        self.name = name
        self._mtu = mtu
        self._chars: dict[str, _Characteristic] = {}
        self._subscribers: dict[str, NotificationCallback] = {}
        self._listeners: list[ConnectionCallback] = []
        self._connected = False
        self._epoch = 0  # bumps on every connect/disconnect; in-flight notifications of an old
        self._faults = _Faults()  # link are dropped
        self.link_available = True
        self.sent: dict[str, int] = {}
        self.lost = 0
        self.corrupted = 0
        self.connects = 0

    # ------------------------------------------------------------ device side

    def add_characteristic(
        self,
        uuid: str,
        *,
        read: Callable[[], bytes] | None = None,
        write: Callable[[bytes], None] | None = None,
    ) -> None:
        self._chars[uuid] = _Characteristic(read, write)

    def notify(self, uuid: str, data: bytes) -> bool:
        """Send a notification/indication; False when nobody can receive it (not subscribed)."""
        if not self._connected or uuid not in self._subscribers:
            return False
        self.sent[uuid] = self.sent.get(uuid, 0) + 1
        if self._faults.lose.get(uuid, 0) > 0:
            self._faults.lose[uuid] -= 1
            self.lost += 1
            return True
        if self._faults.corrupt.get(uuid, 0) > 0 and data:
            self._faults.corrupt[uuid] -= 1
            self.corrupted += 1
            flipped = bytearray(data)
            flipped[len(flipped) // 2] ^= 0x10
            data = bytes(flipped)
        epoch = self._epoch
        loop = asyncio.get_running_loop()
        delay_s = self._faults.delay_s.get(uuid, 0.0)
        if delay_s > 0:
            loop.call_later(delay_s, self._deliver, uuid, data, epoch)
        else:  # call_soon keeps the order of notifications; equal call_later deadlines may not
            loop.call_soon(self._deliver, uuid, data, epoch)
        return True

    def _deliver(self, uuid: str, data: bytes, epoch: int) -> None:
        callback = self._subscribers.get(uuid)
        if epoch != self._epoch or not self._connected or callback is None:
            self.lost += 1
            return
        callback(data)

    # ------------------------------------------------------------ faults

    def drop_link(self) -> None:
        """The radio link ends now (device out of range); subscriptions are gone with it."""
        if self._connected:
            self._connected = False
            self._epoch += 1
            self._subscribers.clear()
            for callback in list(self._listeners):
                callback(False)

    def lose_next(self, uuid: str, count: int = 1) -> None:
        self._faults.lose[uuid] = self._faults.lose.get(uuid, 0) + count

    def corrupt_next(self, uuid: str, count: int = 1) -> None:
        self._faults.corrupt[uuid] = self._faults.corrupt.get(uuid, 0) + count

    def corrupt_next_write(self, uuid: str, count: int = 1) -> None:
        """Flip one octet of the client's next write(s) on its way to the device."""
        self._faults.corrupt_write[uuid] = self._faults.corrupt_write.get(uuid, 0) + count

    def delay(self, uuid: str, seconds: float) -> None:
        self._faults.delay_s[uuid] = seconds

    # ------------------------------------------------------------ GattTransport

    @property
    def is_connected(self) -> bool:
        return self._connected

    @property
    def mtu(self) -> int:
        return self._mtu

    def on_connection_change(self, callback: ConnectionCallback) -> None:
        self._listeners.append(callback)

    async def connect(self, timeout_s: float = 10.0) -> None:
        await asyncio.sleep(0)
        if not self.link_available:
            raise TransportError(f"{self.name}: device not reachable")
        if not self._connected:
            self._connected = True
            self._epoch += 1
            self.connects += 1
            for callback in list(self._listeners):
                callback(True)

    async def disconnect(self) -> None:
        await asyncio.sleep(0)
        self.drop_link()

    def _char(self, uuid: str) -> _Characteristic:
        if not self._connected:
            raise NotConnectedError(f"{self.name}: not connected")
        try:
            return self._chars[uuid]
        except KeyError:
            raise TransportError(f"{self.name}: no characteristic {uuid}") from None

    async def read(self, uuid: str) -> bytes:
        await asyncio.sleep(0)
        char = self._char(uuid)
        if char.read is None:
            raise TransportError(f"{self.name}: {uuid} is not readable")
        return char.read()

    async def write(self, uuid: str, data: bytes, *, response: bool = True) -> None:
        await asyncio.sleep(0)
        char = self._char(uuid)
        if char.write is None:
            raise TransportError(f"{self.name}: {uuid} is not writable")
        if self._faults.corrupt_write.get(uuid, 0) > 0 and data:
            self._faults.corrupt_write[uuid] -= 1
            self.corrupted += 1
            flipped = bytearray(data)
            flipped[len(flipped) // 2] ^= 0x10
            data = bytes(flipped)
        char.write(bytes(data))

    async def subscribe(self, uuid: str, callback: NotificationCallback) -> None:
        await asyncio.sleep(0)
        self._char(uuid)
        self._subscribers[uuid] = callback

    async def unsubscribe(self, uuid: str) -> None:
        await asyncio.sleep(0)
        self._subscribers.pop(uuid, None)


# ================================================================ CGMS sensor

CGM_MEASUREMENT = uuid16(cgms.CGM_MEASUREMENT_UUID16)
CGM_RACP = uuid16(ble_cgm.RACP_UUID16)


class SimulatedCgmPeripheral(SimulatedGattPeripheral):
    """A CGMS sensor measuring `glucose_mg_dl(minutes since session start)` every interval.

    Call `tick()` after moving the clock: due measurements are stored and notified. Values
    below 40 / above 400 mg/dL are sent as the range limit with the low/high annunciation.
    """

    def __init__(
        self,
        clock: Clock,
        glucose_mg_dl: Callable[[int], float],
        *,
        session_start: datetime,
        interval_min: int = 5,
        e2e: bool = True,
        quality_pct: float = 95.0,
    ) -> None:
        super().__init__("cgm")
        self._clock = clock
        self._glucose = glucose_mg_dl
        self.session_start = session_start
        self.interval_min = interval_min
        self.e2e = e2e
        self.quality_pct = quality_pct
        self.records: dict[int, cgms.CgmMeasurement] = {}
        self._next_offset = 0
        features = cgms.CgmFeatureFlag.TREND_INFORMATION | cgms.CgmFeatureFlag.QUALITY
        if e2e:
            features |= cgms.CgmFeatureFlag.E2E_CRC
        feature = cgms.CgmFeature(features, cgm_type=9, sample_location=5)
        self.add_characteristic(
            uuid16(cgms.CGM_FEATURE_UUID16), read=lambda: cgms.encode_feature(feature)
        )
        self.add_characteristic(CGM_MEASUREMENT)
        self.add_characteristic(uuid16(cgms.CGM_SESSION_START_TIME_UUID16), read=self._sst)
        self.add_characteristic(uuid16(cgms.CGM_STATUS_UUID16), read=self._status)
        self.add_characteristic(uuid16(cgms.CGM_SESSION_RUN_TIME_UUID16), read=self._run_time)
        self.add_characteristic(uuid16(cgms.CGM_SOCP_UUID16), write=self._socp)
        self.add_characteristic(CGM_RACP, write=self._racp)

    def _sst(self) -> bytes:
        local = self.session_start.replace(tzinfo=None, microsecond=0)
        sst = cgms.SessionStartTime(local, time_zone_15min=0, dst_offset_code=0)
        return cgms.encode_session_start_time(sst, e2e_crc=self.e2e)

    def _status(self) -> bytes:
        status = cgms.CgmStatus(max(self._next_offset - 1, 0), cgms.SensorStatus())
        return cgms.encode_status(status, e2e_crc=self.e2e)

    def _run_time(self) -> bytes:
        return cgms.encode_session_run_time(cgms.SessionRunTime(14 * 24), e2e_crc=self.e2e)

    def _socp(self, data: bytes) -> None:
        # Only the op code is looked at: sessions here always run.
        op = data[0] if data else 0
        code = (
            cgms.SocpResponseCode.SUCCESS
            if op in (26, 27)
            else (cgms.SocpResponseCode.OP_CODE_NOT_SUPPORTED)
        )
        resp = cgms.SocpResponse(cgms.SocpOpcode.RESPONSE_CODE, op, code)
        self.notify(uuid16(cgms.CGM_SOCP_UUID16), cgms.encode_socp_response(resp, e2e_crc=self.e2e))

    def measurement_at(self, offset_min: int) -> cgms.CgmMeasurement:
        value = self._glucose(offset_min)
        warning = 0
        if value < 40:
            value, warning = 40, 0x40
        elif value > 400:
            value, warning = 400, 0x80
        previous = self._glucose(offset_min - self.interval_min) if offset_min else value
        trend = (value - min(max(previous, 40), 400)) / self.interval_min
        return cgms.CgmMeasurement(
            glucose_mg_dl=_num(round(value, 1)),
            time_offset_min=offset_min,
            sensor_status=cgms.SensorStatus(warning=warning),
            trend_mg_dl_per_min=_num(round(trend, 2)),
            quality_pct=_num(self.quality_pct),
        )

    def tick(self) -> int:
        """Measure everything due up to the clock's now; returns how many were measured."""
        elapsed_min = (self._clock.now() - self.session_start) / timedelta(minutes=1)
        made = 0
        while self._next_offset <= elapsed_min:
            m = self.measurement_at(self._next_offset)
            self.records[m.time_offset_min] = m
            self.notify(CGM_MEASUREMENT, cgms.encode_measurement(m, e2e_crc=self.e2e))
            self._next_offset += self.interval_min
            made += 1
        return made

    def _racp(self, data: bytes) -> None:
        try:
            opcode, _operator, since = ble_cgm.decode_racp_request(data)
        except CodecError:
            self.notify(
                CGM_RACP,
                ble_cgm.encode_racp_response(
                    ble_cgm.RacpOpcode.REPORT_STORED_RECORDS,
                    ble_cgm.RacpResponseCode.INVALID_OPERAND,
                ),
            )
            return
        if opcode is not ble_cgm.RacpOpcode.REPORT_STORED_RECORDS:
            code = ble_cgm.RacpResponseCode.OP_CODE_NOT_SUPPORTED
            self.notify(CGM_RACP, ble_cgm.encode_racp_response(opcode, code))
            return
        wanted = [self.records[o] for o in sorted(self.records) if since is None or o >= since]
        # Several records per notification, as many as fit the MTU (a real sensor does this).
        packet = b""
        for m in wanted:
            rec = cgms.encode_measurement(m, e2e_crc=self.e2e)
            if packet and len(packet) + len(rec) > self.mtu - 3:
                self.notify(CGM_MEASUREMENT, packet)
                packet = b""
            packet += rec
        if packet:
            self.notify(CGM_MEASUREMENT, packet)
        code = (
            ble_cgm.RacpResponseCode.SUCCESS
            if wanted
            else ble_cgm.RacpResponseCode.NO_RECORDS_FOUND
        )
        self.notify(CGM_RACP, ble_cgm.encode_racp_response(opcode, code))


# ================================================================ IDS pump

IDD_COMMAND_CP = uuid16(ids.IDD_COMMAND_CP_UUID16)
IDD_STATUS_READER_CP = uuid16(ids.IDD_STATUS_READER_CP_UUID16)
IDD_RACP = uuid16(ids.IDD_RACP_UUID16)
IDD_HISTORY = uuid16(ids.IDD_HISTORY_DATA_UUID16)


@dataclass
class _Tbr:
    rate_u_per_h: float
    duration_min: int
    started: datetime


@dataclass
class _Bolus:
    bolus_id: int
    bolus_type: ids.BolusType
    fast_u: float
    extended_u: float
    duration_min: int
    started: datetime


@dataclass
class _Record:
    event_type: int
    sequence: int
    offset_s: int
    data: ids.EventData


class SimulatedPumpPeripheral(SimulatedGattPeripheral):
    """An IDS pump: therapy state, one schedule rate, temp basals, boluses, history.

    A fast bolus is delivered at `bolus_rate_u_per_min`; extended parts over their duration.
    Call `tick()` after moving the clock to finish boluses and temp basals. With E2E
    protection, a command whose E2E-Counter repeats the previous one is ignored (a frame
    delivered twice must not dose twice); a command with a bad CRC is ignored (not executed,
    not answered).
    """

    def __init__(
        self,
        clock: Clock,
        *,
        e2e: bool = True,
        reservoir_u: float = 200.0,
        scheduled_basal_u_per_h: float = 0.8,
        max_bolus_u: float = 25.0,
        max_basal_u_per_h: float = 15.0,
        bolus_rate_u_per_min: float = 1.5,
        battery_pct: int = 80,
        clock_skew_s: float = 0.0,
    ) -> None:
        super().__init__("pump")
        self._clock = clock
        self.e2e = e2e
        self.reservoir_u = reservoir_u
        self.scheduled_basal_u_per_h = scheduled_basal_u_per_h
        self.max_bolus_u = max_bolus_u
        self.max_basal_u_per_h = max_basal_u_per_h
        self.bolus_rate_u_per_min = bolus_rate_u_per_min
        self.battery_pct = battery_pct
        self.clock_skew_s = clock_skew_s
        self.therapy = ids.TherapyControlState.RUN
        self.tbr: _Tbr | None = None
        self.boluses: list[_Bolus] = []
        self.delivered_bolus_u = 0.0
        self.executed: list[ids.Command] = []
        self.history: list[_Record] = []
        self._reference = self.now()
        self._next_bolus_id = 1
        self._counter = 0
        self._last_client_counter: int | None = None
        self._record(ids.HistoryEventType.REFERENCE_TIME, ble_pump.encode_reference_time(
            ble_pump.ReferenceTime(self._reference)
        ))  # fmt: skip
        self.add_characteristic(uuid16(ids.IDD_STATUS_UUID16), read=self._status)
        self.add_characteristic(uuid16(ble_pump.CURRENT_TIME_UUID16), read=self._time)
        self.add_characteristic(
            uuid16(ble_pump.BATTERY_LEVEL_UUID16), read=lambda: bytes([self.battery_pct])
        )
        self.add_characteristic(IDD_COMMAND_CP, write=self._command_cp)
        self.add_characteristic(IDD_STATUS_READER_CP, write=self._status_reader)
        self.add_characteristic(IDD_RACP, write=self._racp)
        self.add_characteristic(IDD_HISTORY)

    # ------------------------------------------------------------ model

    def now(self) -> datetime:
        return self._clock.now() + timedelta(seconds=self.clock_skew_s)

    def _out_counter(self) -> int | None:
        if not self.e2e:
            return None
        self._counter = (self._counter + 1) & 0xFF
        return self._counter

    def _record(self, event_type: int, data: ids.EventData) -> None:
        offset_s = int((self.now() - self._reference).total_seconds())
        if offset_s > 0xFFFF:  # the 16-bit offset would overflow: start a new reference
            self._reference = self.now().replace(microsecond=0)
            ref = ble_pump.encode_reference_time(ble_pump.ReferenceTime(self._reference))
            self.history.append(
                _Record(ids.HistoryEventType.REFERENCE_TIME, len(self.history), 0, ref)
            )
            offset_s = 0
        self.history.append(_Record(event_type, len(self.history), offset_s, data))

    def tick(self) -> None:
        """Finish whatever the clock has run past."""
        now = self.now()
        for b in list(self.boluses):
            fast_done = b.started + timedelta(minutes=b.fast_u / self.bolus_rate_u_per_min)
            if max(fast_done, b.started + timedelta(minutes=b.duration_min)) <= now:
                self._end_bolus(
                    b, b.fast_u, b.extended_u, ids.BolusEndReason.PROGRAMMED_DURATION_OVER
                )
        if self.tbr and self.tbr.started + timedelta(minutes=self.tbr.duration_min) <= now:
            self._end_tbr(ids.TbrEndReason.PROGRAMMED_DURATION_OVER)

    def _end_bolus(
        self, b: _Bolus, fast_u: float, extended_u: float, reason: ids.BolusEndReason
    ) -> None:
        self.boluses.remove(b)
        self.delivered_bolus_u += fast_u + extended_u
        self.reservoir_u -= fast_u + extended_u
        part1 = ids.BolusDeliveredPart1(
            b.bolus_id, b.bolus_type, _num(round(fast_u, 2)),
            _num(round(extended_u, 2)), b.duration_min,
        )  # fmt: skip
        self._record(ids.HistoryEventType.BOLUS_DELIVERED_PART_1, part1)
        start_s = int((b.started - self._reference).total_seconds())
        part2 = ids.BolusDeliveredPart2(max(start_s, 0), ids.ActivationType.COMMANDED, reason)
        self._record(ids.HistoryEventType.BOLUS_DELIVERED_PART_2, part2)

    def _end_tbr(self, reason: ids.TbrEndReason) -> None:
        if self.tbr is None:
            return
        minutes = int((self.now() - self.tbr.started) / timedelta(minutes=1))
        ended = ids.TbrEnded(ids.TbrType.ABSOLUTE, min(minutes, self.tbr.duration_min), reason)
        self._record(ids.HistoryEventType.TBR_ADJUSTMENT_ENDED, ended)
        self.tbr = None

    def _set_therapy(self, state: ids.TherapyControlState) -> ids.ResponseCode:
        if state is ids.TherapyControlState.UNDETERMINED:
            return ids.ResponseCode.INVALID_OPERAND
        if state is not ids.TherapyControlState.RUN:
            for b in list(self.boluses):  # pausing stops a running bolus where it is
                frac = min(
                    (self.now() - b.started)
                    / timedelta(minutes=1)
                    * self.bolus_rate_u_per_min
                    / b.fast_u
                    if b.fast_u
                    else 1.0,
                    1.0,
                )
                self._end_bolus(b, round(b.fast_u * frac, 2), 0.0, ids.BolusEndReason.CANCELED)
        old, self.therapy = self.therapy, state
        if old is not state:
            self._record(
                ids.HistoryEventType.THERAPY_CONTROL_STATE_CHANGED,
                ble_pump.encode_therapy_state_changed(old, state),
            )
        return ids.ResponseCode.SUCCESS

    def _execute(self, cmd: ids.Command) -> ids.CommandResponse:
        self.tick()
        op: int
        code = ids.ResponseCode.SUCCESS
        bolus_id: int | None = None
        running = self.therapy is ids.TherapyControlState.RUN
        if isinstance(cmd, ids.SetTherapyControlState):
            op = ids.CommandOpcode.SET_THERAPY_CONTROL_STATE
            code = self._set_therapy(cmd.state)
        elif isinstance(cmd, ids.SetTbr):
            op = ids.CommandOpcode.SET_TBR_ADJUSTMENT
            if cmd.tbr_type is not ids.TbrType.ABSOLUTE:
                code = ids.ResponseCode.INVALID_OPERAND
            elif not running or (self.tbr is not None and not cmd.change_running):
                code = ids.ResponseCode.PROCEDURE_NOT_APPLICABLE
            elif cmd.value > self.max_basal_u_per_h:
                code = ids.ResponseCode.PARAMETER_OUT_OF_RANGE
            else:
                self._end_tbr(ids.TbrEndReason.CANCELED)
                self.tbr = _Tbr(cmd.value, cmd.duration_min, self.now())
                started = ids.TbrStarted(
                    ids.TbrType.ABSOLUTE,
                    _num(cmd.value),
                    cmd.duration_min,
                )
                self._record(ids.HistoryEventType.TBR_ADJUSTMENT_STARTED, started)
        elif isinstance(cmd, ids.CancelTbr):
            op = ids.CommandOpcode.CANCEL_TBR_ADJUSTMENT
            if self.tbr is None:
                code = ids.ResponseCode.PROCEDURE_NOT_APPLICABLE
            else:
                self._end_tbr(ids.TbrEndReason.CANCELED)
        elif isinstance(cmd, ids.SetBolus):
            op = ids.CommandOpcode.SET_BOLUS
            total = cmd.fast_amount_u + cmd.extended_amount_u
            if not running or total > self.reservoir_u:
                code = ids.ResponseCode.PROCEDURE_NOT_APPLICABLE
            elif total <= 0 or total > self.max_bolus_u:
                code = ids.ResponseCode.PARAMETER_OUT_OF_RANGE
            elif self.boluses:
                code = ids.ResponseCode.MAXIMUM_BOLUS_NUMBER_REACHED
            else:
                bolus_id = self._next_bolus_id
                self._next_bolus_id += 1
                b = _Bolus(
                    bolus_id, cmd.bolus_type, cmd.fast_amount_u, cmd.extended_amount_u,
                    cmd.duration_min, self.now(),
                )  # fmt: skip
                self.boluses.append(b)
                self._record(
                    ids.HistoryEventType.BOLUS_PROGRAMMED_PART_1,
                    ble_pump.encode_bolus_programmed_part1(
                        bolus_id, b.bolus_type, b.fast_u, b.extended_u, b.duration_min
                    ),
                )
                return ids.CommandResponse(ids.CommandOpcode.SET_BOLUS_RESPONSE, bolus_id=bolus_id)
        else:
            op = ids.CommandOpcode.CANCEL_BOLUS
            match = [b for b in self.boluses if b.bolus_id == cmd.bolus_id]
            if not match:
                code = ids.ResponseCode.PROCEDURE_NOT_APPLICABLE
            else:
                self._end_bolus(match[0], 0.0, 0.0, ids.BolusEndReason.CANCELED)
                return ids.CommandResponse(
                    ids.CommandOpcode.CANCEL_BOLUS_RESPONSE, bolus_id=cmd.bolus_id
                )
        return ids.CommandResponse(ids.CommandOpcode.RESPONSE_CODE, op, code)

    # ------------------------------------------------------------ characteristics

    def _status(self) -> bytes:
        self.tick()
        status = ids.IddStatus(
            self.therapy,
            ids.OperationalState.READY,
            _num(round(self.reservoir_u, 1)),
            reservoir_attached=True,
        )
        return ids.encode_status(status, e2e_counter=self._out_counter())

    def _time(self) -> bytes:
        return ble_pump.encode_exact_time(self.now())

    def _command_cp(self, data: bytes) -> None:
        try:
            cmd, counter = ids.decode_command(data, e2e=self.e2e)
        except CodecError as exc:
            log.info("pump: command frame ignored: %s", exc)
            return
        if self.e2e:
            if counter == self._last_client_counter:
                log.info("pump: repeated E2E-Counter %s ignored", counter)
                return
            self._last_client_counter = counter
        resp = self._execute(cmd)
        if resp.succeeded:
            self.executed.append(cmd)
        self.notify(
            IDD_COMMAND_CP, ids.encode_command_response(resp, e2e_counter=self._out_counter())
        )

    def _status_reader(self, data: bytes) -> None:
        self.tick()
        try:
            payload = data[:-3] if self.e2e else data
            if self.e2e:
                split_and_check_crc(data, "IDD Status Reader CP")
            op = int.from_bytes(payload[0:2], "little")
        except CodecError:
            return
        if op == ids.StatusReaderOpcode.GET_ACTIVE_BASAL_RATE_DELIVERY:
            remaining = 0
            if self.tbr is not None:
                end = self.tbr.started + timedelta(minutes=self.tbr.duration_min)
                remaining = max(0, int((end - self.now()) / timedelta(minutes=1)))
            frame = ble_pump.encode_active_basal_rate_delivery(
                ble_pump.ActiveBasalRateDelivery(
                    1,
                    Decimal(repr(self.scheduled_basal_u_per_h)),
                    ids.TbrType.ABSOLUTE if self.tbr else None,
                    Decimal(repr(self.tbr.rate_u_per_h)) if self.tbr else None,
                    self.tbr.duration_min if self.tbr else 0,
                    remaining,
                ),
                counter=self._out_counter(),
            )
        elif op == ids.StatusReaderOpcode.GET_ACTIVE_BOLUS_IDS:
            frame = ble_pump.encode_active_bolus_ids(
                [b.bolus_id for b in self.boluses], counter=self._out_counter()
            )
        else:
            frame = ble_pump.encode_status_reader_response_code(
                op, ids.ResponseCode.OP_CODE_NOT_SUPPORTED, counter=self._out_counter()
            )
        self.notify(IDD_STATUS_READER_CP, frame)

    def _racp(self, data: bytes) -> None:
        self.tick()
        try:
            opcode, operator, since = ble_pump.decode_idd_racp_request(data, e2e=self.e2e)
        except CodecError:
            return
        if opcode != ble_pump.IddRacpOpcode.REPORT_STORED_RECORDS or operator not in (
            ble_pump.IddRacpOperator.ALL_RECORDS,
            ble_pump.IddRacpOperator.GREATER_THAN_OR_EQUAL,
        ):
            code = ble_pump.IDD_RACP_PROCEDURE_NOT_APPLICABLE
        else:
            code = ble_pump.IDD_RACP_SUCCESS
            for rec in self.history:
                if since is None or rec.sequence >= since:
                    event = ids.HistoryEvent(rec.event_type, rec.sequence, rec.offset_s, rec.data)
                    self.notify(
                        IDD_HISTORY, ids.encode_history(event, e2e_counter=self._out_counter())
                    )
        self.notify(
            IDD_RACP,
            ble_pump.encode_idd_racp_response(opcode, code, counter=self._out_counter()),
        )

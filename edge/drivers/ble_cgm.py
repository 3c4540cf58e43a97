"""`CgmDriver` for a Bluetooth SIG CGM Service (0x181F) sensor over any `GattTransport`.

The sensor notifies CGM Measurements; the driver decodes them (edge.ble.cgms), converts them
with edge.drivers.ble_mapping and keeps them by sequence (the session time offset), so a
record heard twice — live and again in a backfill — is kept once. Readings missed while the
link was down, or dropped because a frame failed its E2E-CRC, are fetched with the Record
Access Control Point (0x2A52, "report stored records with time offset ≥ n") when the link is
next up. The link is re-established lazily by the next `readings_since` call.

The RACP codec below is the generic SIG one (op codes 1–6, operators 0–6, CGMS filter type
0x01 = time offset); it lives here until it moves next to the other codecs in edge/ble/.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from dataclasses import replace
from datetime import datetime

from edge.ble import cgms
from edge.ble.errors import CodecError
from edge.ble.transport import GattTransport, TransportError, uuid16
from edge.drivers.base import CgmReading
from edge.drivers.ble_mapping import reading_from_measurement

__all__ = [
    "RACP_UUID16",
    "BleCgmDriver",
    "CgmDriverError",
    "RacpOpcode",
    "RacpOperator",
    "RacpResponseCode",
    "decode_racp_request",
    "decode_racp_response",
    "encode_racp_request",
    "encode_racp_response",
]

log = logging.getLogger(__name__)

RACP_UUID16 = 0x2A52
RACP_FILTER_TIME_OFFSET = 0x01


class RacpOpcode(enum.IntEnum):
    REPORT_STORED_RECORDS = 1
    DELETE_STORED_RECORDS = 2
    ABORT_OPERATION = 3
    REPORT_NUMBER_OF_STORED_RECORDS = 4
    NUMBER_OF_STORED_RECORDS_RESPONSE = 5
    RESPONSE_CODE = 6


class RacpOperator(enum.IntEnum):
    NULL = 0
    ALL_RECORDS = 1
    LESS_THAN_OR_EQUAL = 2
    GREATER_THAN_OR_EQUAL = 3
    WITHIN_RANGE = 4
    FIRST_RECORD = 5
    LAST_RECORD = 6


class RacpResponseCode(enum.IntEnum):
    SUCCESS = 1
    OP_CODE_NOT_SUPPORTED = 2
    INVALID_OPERATOR = 3
    OPERATOR_NOT_SUPPORTED = 4
    INVALID_OPERAND = 5
    NO_RECORDS_FOUND = 6
    ABORT_UNSUCCESSFUL = 7
    PROCEDURE_NOT_COMPLETED = 8
    OPERAND_NOT_SUPPORTED = 9


def encode_racp_request(since_offset_min: int | None) -> bytes:
    """Report stored records: all of them, or those with time offset ≥ `since_offset_min`."""
    if since_offset_min is None:
        return bytes([RacpOpcode.REPORT_STORED_RECORDS, RacpOperator.ALL_RECORDS])
    if not 0 <= since_offset_min <= 0xFFFF:
        raise CodecError(f"RACP: time offset {since_offset_min} does not fit 16 bits")
    return (
        bytes([RacpOpcode.REPORT_STORED_RECORDS, RacpOperator.GREATER_THAN_OR_EQUAL])
        + bytes([RACP_FILTER_TIME_OFFSET])
        + since_offset_min.to_bytes(2, "little")
    )


def decode_racp_request(data: bytes) -> tuple[RacpOpcode, RacpOperator, int | None]:
    """(op code, operator, minimum time offset) of a request — the sensor side."""
    if len(data) < 2:
        raise CodecError("RACP: request too short")
    try:
        opcode, operator = RacpOpcode(data[0]), RacpOperator(data[1])
    except ValueError as exc:
        raise CodecError(f"RACP: {exc}") from exc
    if operator is RacpOperator.GREATER_THAN_OR_EQUAL:
        if len(data) != 5 or data[2] != RACP_FILTER_TIME_OFFSET:
            raise CodecError("RACP: ≥ needs filter type time offset and a uint16 operand")
        return opcode, operator, int.from_bytes(data[3:5], "little")
    if len(data) != 2:
        raise CodecError("RACP: unexpected operand")
    return opcode, operator, None


def encode_racp_response(request: RacpOpcode, code: RacpResponseCode) -> bytes:
    return bytes([RacpOpcode.RESPONSE_CODE, RacpOperator.NULL, request, code])


def decode_racp_response(data: bytes) -> tuple[int, RacpResponseCode]:
    if len(data) != 4 or data[0] != RacpOpcode.RESPONSE_CODE or data[1] != RacpOperator.NULL:
        raise CodecError(f"RACP: not a response code indication: {bytes(data).hex()}")
    try:
        return data[2], RacpResponseCode(data[3])
    except ValueError as exc:
        raise CodecError(f"RACP: unknown response code {data[3]}") from exc


class CgmDriverError(RuntimeError):
    """The sensor answered with something unusable (bad CRC, bad value, refused backfill)."""


_MEASUREMENT = uuid16(cgms.CGM_MEASUREMENT_UUID16)
_FEATURE = uuid16(cgms.CGM_FEATURE_UUID16)
_SESSION_START = uuid16(cgms.CGM_SESSION_START_TIME_UUID16)
_RACP = uuid16(RACP_UUID16)


class BleCgmDriver:
    """`CgmDriver` over a CGMS peripheral.

    `decode_errors` counts notifications rejected (bad CRC, malformed); each one triggers a
    backfill so the reading it carried is fetched again rather than lost.
    """

    def __init__(
        self,
        transport: GattTransport,
        *,
        sensor_id: str,
        response_timeout_s: float = 5.0,
        connect_timeout_s: float = 10.0,
        connect_attempts: int = 3,
        max_cached: int = 4096,
    ) -> None:
        if connect_attempts < 1 or response_timeout_s <= 0 or max_cached < 1:
            raise ValueError("connect_attempts, response_timeout_s and max_cached must be > 0")
        self._t = transport
        self.sensor_id = sensor_id
        self._response_timeout_s = response_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._connect_attempts = connect_attempts
        self._max_cached = max_cached
        self._readings: dict[int, CgmReading] = {}
        self._ready = False
        self._e2e = False
        self._session_start: datetime | None = None
        self._backfilling = False
        self._needs_backfill = True
        self._backfill_from: int | None = None  # first offset that may be missing; None = all
        self._racp_reply: asyncio.Future[tuple[int, RacpResponseCode]] | None = None
        self._lock = asyncio.Lock()
        self.decode_errors = 0
        self.connects = 0
        self.last_error = ""
        transport.on_connection_change(self._on_connection_change)

    # ------------------------------------------------------------ CgmDriver

    async def readings_since(self, after_sequence: int) -> list[CgmReading]:
        async with self._lock:
            await self._ensure_ready()
            if self._needs_backfill:
                await self._backfill()
        return [self._readings[s] for s in sorted(self._readings) if s > after_sequence]

    async def close(self) -> None:
        self._ready = False
        if self._t.is_connected:
            await self._t.disconnect()

    @property
    def link_up(self) -> bool:
        return self._ready and self._t.is_connected

    # ------------------------------------------------------------ link

    def _on_connection_change(self, up: bool) -> None:
        if not up:
            self._ready = False
            self._mark_gap()  # whatever is measured meanwhile stays on the sensor
            if self._racp_reply is not None and not self._racp_reply.done():
                self._racp_reply.set_exception(TransportError("link dropped during backfill"))

    async def _ensure_ready(self) -> None:
        if self._ready and self._t.is_connected:
            return
        last_exc: Exception | None = None
        for attempt in range(self._connect_attempts):
            try:
                if not self._t.is_connected:
                    await self._t.connect(self._connect_timeout_s)
                await self._setup()
                self.connects += 1
                return
            except TransportError as exc:
                last_exc = exc
                await asyncio.sleep(min(0.05 * 2**attempt, 2.0))
        raise TransportError(f"CGM {self.sensor_id}: link down ({last_exc})") from last_exc

    async def _setup(self) -> None:
        try:
            feature = cgms.decode_feature(await self._t.read(_FEATURE))
            e2e = feature.e2e_crc
            start = cgms.decode_session_start_time(
                await self._t.read(_SESSION_START), e2e_crc=e2e
            ).to_utc()
        except CodecError as exc:
            self.decode_errors += 1
            raise CgmDriverError(f"CGM {self.sensor_id}: unreadable setup value: {exc}") from exc
        if self._session_start is not None and start != self._session_start:
            # A new sensor session restarts time offsets at 0; the sequence would go backwards.
            raise CgmDriverError(
                f"CGM {self.sensor_id}: session changed ({self._session_start} → {start}); "
                "a new session needs a new driver (sensor id)"
            )
        self._e2e, self._session_start = e2e, start
        await self._t.subscribe(_MEASUREMENT, self._on_measurement)
        await self._t.subscribe(_RACP, self._on_racp)
        self._ready = True

    # ------------------------------------------------------------ notifications

    def _on_measurement(self, data: bytes) -> None:
        try:
            records = cgms.decode_measurements(data, e2e_crc=self._e2e)
        except CodecError as exc:
            self.decode_errors += 1
            self.last_error = str(exc)
            self._mark_gap()
            log.warning("CGM %s: measurement rejected: %s", self.sensor_id, exc)
            return
        start = self._session_start
        if start is None:  # pragma: no cover - subscribed only after the start is known
            return
        for m in records:
            reading = reading_from_measurement(m, sensor_id=self.sensor_id, session_start=start)
            if reading.sequence not in self._readings:
                self._readings[reading.sequence] = replace(reading, backfill=self._backfilling)
        while len(self._readings) > self._max_cached:
            del self._readings[min(self._readings)]

    def _on_racp(self, data: bytes) -> None:
        reply = self._racp_reply
        try:
            decoded = decode_racp_response(data)
        except CodecError as exc:
            self.decode_errors += 1
            if reply is not None and not reply.done():
                reply.set_exception(CgmDriverError(f"CGM {self.sensor_id}: {exc}"))
            return
        if reply is not None and not reply.done():
            reply.set_result(decoded)

    def _mark_gap(self) -> None:
        # Remember where the gap starts: readings that arrive after it must not move it forward.
        if not self._needs_backfill:
            self._needs_backfill = True
            self._backfill_from = max(self._readings) + 1 if self._readings else None

    async def _backfill(self) -> None:
        since = self._backfill_from
        reply = asyncio.get_running_loop().create_future()
        self._racp_reply = reply
        self._backfilling = True
        try:
            await self._t.write(_RACP, encode_racp_request(since), response=True)
            request, code = await asyncio.wait_for(reply, self._response_timeout_s)
        except TimeoutError as exc:
            raise CgmDriverError(
                f"CGM {self.sensor_id}: no answer to the backfill request"
            ) from exc
        finally:
            self._backfilling = False
            self._racp_reply = None
        if request != RacpOpcode.REPORT_STORED_RECORDS or code not in (
            RacpResponseCode.SUCCESS,
            RacpResponseCode.NO_RECORDS_FOUND,
        ):
            raise CgmDriverError(f"CGM {self.sensor_id}: backfill refused ({code.name})")
        self._needs_backfill = False
        self._backfill_from = None

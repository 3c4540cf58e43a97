"""Bluetooth SIG Continuous Glucose Monitoring Service (CGMS, 0x181F) codecs.

Field layouts follow the SIG characteristic definitions (CGM Measurement 0x2AA7, CGM Feature
0x2AA8, CGM Status 0x2AA9, CGM Session Start Time 0x2AAA, CGM Session Run Time 0x2AAB, CGM
Specific Ops Control Point 0x2AAC); docs/edge.md lists the source of every value. All
multi-octet fields are little-endian. Each decoder raises only `CodecError`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from edge.ble import _reader as w
from edge.ble._reader import Reader
from edge.ble.crc import append_crc, crc16_mcrf4xx, split_and_check_crc
from edge.ble.errors import CodecError
from edge.ble.mder import MderNumber, decode_sfloat, encode_sfloat

__all__ = [
    "CGMS_SERVICE_UUID16",
    "CGM_FEATURE_UUID16",
    "CGM_MEASUREMENT_UUID16",
    "CGM_SESSION_RUN_TIME_UUID16",
    "CGM_SESSION_START_TIME_UUID16",
    "CGM_SOCP_UUID16",
    "CGM_STATUS_UUID16",
    "CgmFeature",
    "CgmFeatureFlag",
    "CgmMeasurement",
    "CgmStatus",
    "SensorStatus",
    "SessionRunTime",
    "SessionStartTime",
    "SocpOpcode",
    "SocpRequest",
    "SocpResponse",
    "SocpResponseCode",
    "decode_feature",
    "decode_measurements",
    "decode_session_run_time",
    "decode_session_start_time",
    "decode_socp_response",
    "decode_status",
    "encode_feature",
    "encode_measurement",
    "encode_session_run_time",
    "encode_session_start_time",
    "encode_socp_request",
    "encode_socp_response",
    "encode_status",
]

CGMS_SERVICE_UUID16 = 0x181F
CGM_MEASUREMENT_UUID16 = 0x2AA7
CGM_FEATURE_UUID16 = 0x2AA8
CGM_STATUS_UUID16 = 0x2AA9
CGM_SESSION_START_TIME_UUID16 = 0x2AAA
CGM_SESSION_RUN_TIME_UUID16 = 0x2AAB
CGM_SOCP_UUID16 = 0x2AAC

# CGM Measurement flags (bit positions)
_TREND_PRESENT = 0x01
_QUALITY_PRESENT = 0x02
_WARNING_OCTET_PRESENT = 0x20
_CAL_TEMP_OCTET_PRESENT = 0x40
_STATUS_OCTET_PRESENT = 0x80
_KNOWN_MEAS_FLAGS = (
    _TREND_PRESENT
    | _QUALITY_PRESENT
    | _WARNING_OCTET_PRESENT
    | _CAL_TEMP_OCTET_PRESENT
    | _STATUS_OCTET_PRESENT
)
_MIN_RECORD_SIZE = 6


class CgmFeatureFlag(enum.IntFlag):
    """CGM Feature bits (24-bit field)."""

    CALIBRATION = 1 << 0
    PATIENT_HIGH_LOW_ALERTS = 1 << 1
    HYPO_ALERTS = 1 << 2
    HYPER_ALERTS = 1 << 3
    RATE_OF_INCREASE_DECREASE_ALERTS = 1 << 4
    DEVICE_SPECIFIC_ALERT = 1 << 5
    SENSOR_MALFUNCTION_DETECTION = 1 << 6
    SENSOR_TEMPERATURE_HIGH_LOW_DETECTION = 1 << 7
    SENSOR_RESULT_HIGH_LOW_DETECTION = 1 << 8
    LOW_BATTERY_DETECTION = 1 << 9
    SENSOR_TYPE_ERROR_DETECTION = 1 << 10
    GENERAL_DEVICE_FAULT = 1 << 11
    E2E_CRC = 1 << 12
    MULTIPLE_BOND = 1 << 13
    MULTIPLE_SESSIONS = 1 << 14
    TREND_INFORMATION = 1 << 15
    QUALITY = 1 << 16


@dataclass(frozen=True, slots=True)
class SensorStatus:
    """24-bit Sensor Status Annunciation: Status (bits 0–7), Cal/Temp (8–15), Warning (16–23)."""

    status: int = 0
    cal_temp: int = 0
    warning: int = 0

    def __post_init__(self) -> None:
        for name in ("status", "cal_temp", "warning"):
            value = getattr(self, name)
            if not 0 <= value <= 0xFF:
                raise CodecError(f"sensor status {name} octet {value} out of range")

    # Status octet
    @property
    def session_stopped(self) -> bool:
        return bool(self.status & 0x01)

    @property
    def device_battery_low(self) -> bool:
        return bool(self.status & 0x02)

    @property
    def sensor_malfunction(self) -> bool:
        return bool(self.status & 0x08)

    @property
    def general_device_fault(self) -> bool:
        return bool(self.status & 0x20)

    # Cal/Temp octet
    @property
    def time_sync_required(self) -> bool:
        return bool(self.cal_temp & 0x01)

    @property
    def calibration_required(self) -> bool:
        return bool(self.cal_temp & 0x08)

    # Warning octet
    @property
    def result_lower_than_device_can_process(self) -> bool:
        return bool(self.warning & 0x40)

    @property
    def result_higher_than_device_can_process(self) -> bool:
        return bool(self.warning & 0x80)

    @property
    def as_int(self) -> int:
        return self.status | self.cal_temp << 8 | self.warning << 16

    @classmethod
    def from_int(cls, value: int) -> SensorStatus:
        return cls(status=value & 0xFF, cal_temp=(value >> 8) & 0xFF, warning=value >> 16 & 0xFF)

    @property
    def any_set(self) -> bool:
        return self.as_int != 0


@dataclass(frozen=True, slots=True)
class CgmMeasurement:
    """One CGM Measurement record.

    `sensor_status` octets are transmitted only when non-zero unless `include_zero_octets`
    was requested; `None` trend/quality means the field is absent.
    """

    glucose_mg_dl: MderNumber
    time_offset_min: int
    sensor_status: SensorStatus = field(default_factory=SensorStatus)
    trend_mg_dl_per_min: MderNumber | None = None
    quality_pct: MderNumber | None = None
    # which annunciation octets the record carried (a record may carry a zero octet)
    status_octets_present: tuple[bool, bool, bool] | None = None  # (warning, cal_temp, status)


def _octets_present(m: CgmMeasurement) -> tuple[bool, bool, bool]:
    if m.status_octets_present is not None:
        return m.status_octets_present
    s = m.sensor_status
    return (s.warning != 0, s.cal_temp != 0, s.status != 0)


def encode_measurement(m: CgmMeasurement, *, e2e_crc: bool) -> bytes:
    """One record (Size, Flags, ..., optional E2E-CRC)."""
    warning_p, cal_temp_p, status_p = _octets_present(m)
    s = m.sensor_status
    if (
        (s.warning and not warning_p)
        or (s.cal_temp and not cal_temp_p)
        or (s.status and not status_p)
    ):
        raise CodecError("a non-zero sensor status octet must be transmitted")
    flags = 0
    body = bytearray()
    body += encode_sfloat(m.glucose_mg_dl)
    body += w.u16(m.time_offset_min)
    # Octet order Warning, Cal/Temp, Status follows Nordic's implementations (see docs/edge.md).
    if warning_p:
        flags |= _WARNING_OCTET_PRESENT
        body += w.u8(s.warning)
    if cal_temp_p:
        flags |= _CAL_TEMP_OCTET_PRESENT
        body += w.u8(s.cal_temp)
    if status_p:
        flags |= _STATUS_OCTET_PRESENT
        body += w.u8(s.status)
    if m.trend_mg_dl_per_min is not None:
        flags |= _TREND_PRESENT
        body += encode_sfloat(m.trend_mg_dl_per_min)
    if m.quality_pct is not None:
        flags |= _QUALITY_PRESENT
        body += encode_sfloat(m.quality_pct)
    size = 2 + len(body) + (2 if e2e_crc else 0)
    record = bytes([size, flags]) + bytes(body)
    return append_crc(record) if e2e_crc else record


def decode_measurements(data: bytes, *, e2e_crc: bool) -> list[CgmMeasurement]:
    """All records in one CGM Measurement notification.

    `e2e_crc` is what the CGM Feature says; a record whose size disagrees with it, or whose
    CRC is wrong, makes the whole notification invalid (no partial acceptance of a frame that
    was corrupted somewhere).
    """
    r = Reader(data, "CGM Measurement")
    if r.remaining == 0:
        raise CodecError("CGM Measurement: empty")
    records: list[CgmMeasurement] = []
    while r.remaining:
        size = r.u8()
        if size < _MIN_RECORD_SIZE + (2 if e2e_crc else 0):
            raise CodecError(f"CGM Measurement: record size {size} below minimum")
        raw = bytes([size]) + r.take(size - 1)
        if e2e_crc:
            raw = split_and_check_crc(raw, "CGM Measurement")
        records.append(_decode_record(raw))
    return records


def _decode_record(raw: bytes) -> CgmMeasurement:
    r = Reader(raw, "CGM Measurement record")
    r.u8()  # size, already checked by the caller
    flags = r.u8()
    if flags & ~_KNOWN_MEAS_FLAGS:
        raise CodecError(f"CGM Measurement: reserved flag bits set (0x{flags:02X})")
    glucose = decode_sfloat(r.take(2))
    time_offset = r.u16()
    warning_p = bool(flags & _WARNING_OCTET_PRESENT)
    cal_temp_p = bool(flags & _CAL_TEMP_OCTET_PRESENT)
    status_p = bool(flags & _STATUS_OCTET_PRESENT)
    warning = r.u8() if warning_p else 0
    cal_temp = r.u8() if cal_temp_p else 0
    status = r.u8() if status_p else 0
    trend = decode_sfloat(r.take(2)) if flags & _TREND_PRESENT else None
    quality = decode_sfloat(r.take(2)) if flags & _QUALITY_PRESENT else None
    r.end()
    return CgmMeasurement(
        glucose_mg_dl=glucose,
        time_offset_min=time_offset,
        sensor_status=SensorStatus(status=status, cal_temp=cal_temp, warning=warning),
        trend_mg_dl_per_min=trend,
        quality_pct=quality,
        status_octets_present=(warning_p, cal_temp_p, status_p),
    )


@dataclass(frozen=True, slots=True)
class CgmFeature:
    """CGM Feature: feature bits, type and sample location nibbles, and whether E2E-CRC is on."""

    features: CgmFeatureFlag
    cgm_type: int  # 9 = interstitial fluid
    sample_location: int  # 5 = subcutaneous tissue

    @property
    def e2e_crc(self) -> bool:
        return CgmFeatureFlag.E2E_CRC in self.features


def encode_feature(f: CgmFeature) -> bytes:
    if not (0 <= f.cgm_type <= 0xF and 0 <= f.sample_location <= 0xF):
        raise CodecError("CGM type and sample location are 4-bit values")
    payload = w.u24(int(f.features)) + w.u8(f.cgm_type | f.sample_location << 4)
    # The E2E-CRC field is always present; 0xFFFF when the device does not support E2E.
    return append_crc(payload) if f.e2e_crc else payload + b"\xff\xff"


def decode_feature(data: bytes) -> CgmFeature:
    r = Reader(data, "CGM Feature")
    raw = r.take(6)
    r.end()
    bits = int.from_bytes(raw[0:3], "little")
    if bits & ~int(sum(CgmFeatureFlag)):
        raise CodecError(f"CGM Feature: reserved feature bits set (0x{bits:06X})")
    features = CgmFeatureFlag(bits)
    crc = int.from_bytes(raw[4:6], "little")
    if CgmFeatureFlag.E2E_CRC in features:
        if crc != crc16_mcrf4xx(raw[:4]):
            raise CodecError("CGM Feature: E2E-CRC mismatch")
    elif crc != 0xFFFF:
        raise CodecError("CGM Feature: E2E-CRC must be 0xFFFF when E2E is not supported")
    return CgmFeature(features=features, cgm_type=raw[3] & 0xF, sample_location=raw[3] >> 4)


@dataclass(frozen=True, slots=True)
class CgmStatus:
    time_offset_min: int
    status: SensorStatus


def encode_status(s: CgmStatus, *, e2e_crc: bool) -> bytes:
    payload = w.u16(s.time_offset_min) + w.u24(s.status.as_int)
    return append_crc(payload) if e2e_crc else payload


def decode_status(data: bytes, *, e2e_crc: bool) -> CgmStatus:
    if e2e_crc:
        data = split_and_check_crc(bytes(data), "CGM Status")
    r = Reader(data, "CGM Status")
    time_offset = r.u16()
    status = SensorStatus.from_int(r.u24())
    r.end()
    return CgmStatus(time_offset_min=time_offset, status=status)


@dataclass(frozen=True, slots=True)
class SessionStartTime:
    """Local date-time of session start, time zone in 15-min steps, DST offset code."""

    local_time: datetime  # naive local wall time of the sensor
    time_zone_15min: int  # -48..+56, -128 = unknown
    dst_offset_code: int  # 0 std, 2 half hour, 4 daylight, 8 double, 255 unknown

    def to_utc(self) -> datetime:
        if self.time_zone_15min == -128 or self.dst_offset_code == 255:
            raise CodecError("session start time: time zone or DST unknown")
        offset = timedelta(minutes=15 * self.time_zone_15min + 15 * self.dst_offset_code)
        return (self.local_time - offset).replace(tzinfo=UTC)


_DST_CODES = {0, 2, 4, 8, 255}


def encode_session_start_time(s: SessionStartTime, *, e2e_crc: bool) -> bytes:
    t = s.local_time
    if not (s.time_zone_15min == -128 or -48 <= s.time_zone_15min <= 56):
        raise CodecError(f"time zone {s.time_zone_15min} out of range")
    if s.dst_offset_code not in _DST_CODES:
        raise CodecError(f"DST offset code {s.dst_offset_code} invalid")
    payload = (
        w.u16(t.year)
        + bytes([t.month, t.day, t.hour, t.minute, t.second])
        + w.s8(s.time_zone_15min)
        + w.u8(s.dst_offset_code)
    )
    return append_crc(payload) if e2e_crc else payload


def decode_session_start_time(data: bytes, *, e2e_crc: bool) -> SessionStartTime:
    if e2e_crc:
        data = split_and_check_crc(bytes(data), "CGM Session Start Time")
    r = Reader(data, "CGM Session Start Time")
    year = r.u16()
    month, day, hour, minute, second = r.take(5)
    tz = r.s8()
    dst = r.u8()
    r.end()
    try:
        local = datetime(year, month, day, hour, minute, second)  # the sensor's local wall time
    except ValueError as exc:
        raise CodecError(f"CGM Session Start Time: invalid date-time: {exc}") from exc
    if not (tz == -128 or -48 <= tz <= 56) or dst not in _DST_CODES:
        raise CodecError("CGM Session Start Time: invalid time zone or DST offset")
    return SessionStartTime(local_time=local, time_zone_15min=tz, dst_offset_code=dst)


@dataclass(frozen=True, slots=True)
class SessionRunTime:
    run_time_h: int


def encode_session_run_time(s: SessionRunTime, *, e2e_crc: bool) -> bytes:
    payload = w.u16(s.run_time_h)
    return append_crc(payload) if e2e_crc else payload


def decode_session_run_time(data: bytes, *, e2e_crc: bool) -> SessionRunTime:
    if e2e_crc:
        data = split_and_check_crc(bytes(data), "CGM Session Run Time")
    r = Reader(data, "CGM Session Run Time")
    hours = r.u16()
    r.end()
    return SessionRunTime(run_time_h=hours)


class SocpOpcode(enum.IntEnum):
    """CGM Specific Ops Control Point op codes (basic subset)."""

    SET_COMMUNICATION_INTERVAL = 1
    GET_COMMUNICATION_INTERVAL = 2
    COMMUNICATION_INTERVAL_RESPONSE = 3
    SET_PATIENT_HIGH_ALERT_LEVEL = 7
    SET_PATIENT_LOW_ALERT_LEVEL = 10
    SET_HYPO_ALERT_LEVEL = 13
    START_SESSION = 26
    STOP_SESSION = 27
    RESPONSE_CODE = 28


class SocpResponseCode(enum.IntEnum):
    SUCCESS = 1
    OP_CODE_NOT_SUPPORTED = 2
    INVALID_OPERAND = 3
    PROCEDURE_NOT_COMPLETED = 4
    PARAMETER_OUT_OF_RANGE = 5


_SOCP_SFLOAT_OPERAND = {
    SocpOpcode.SET_PATIENT_HIGH_ALERT_LEVEL,
    SocpOpcode.SET_PATIENT_LOW_ALERT_LEVEL,
    SocpOpcode.SET_HYPO_ALERT_LEVEL,
}


@dataclass(frozen=True, slots=True)
class SocpRequest:
    opcode: SocpOpcode
    interval_min: int | None = None  # SET_COMMUNICATION_INTERVAL
    level_mg_dl: float | None = None  # alert level operands


def encode_socp_request(req: SocpRequest, *, e2e_crc: bool) -> bytes:
    payload = w.u8(int(req.opcode))
    if req.opcode is SocpOpcode.SET_COMMUNICATION_INTERVAL:
        if req.interval_min is None:
            raise CodecError("Set Communication Interval needs interval_min")
        payload += w.u8(req.interval_min)
    elif req.opcode in _SOCP_SFLOAT_OPERAND:
        if req.level_mg_dl is None:
            raise CodecError(f"{req.opcode.name} needs level_mg_dl")
        payload += encode_sfloat(req.level_mg_dl)
    elif req.opcode not in (
        SocpOpcode.GET_COMMUNICATION_INTERVAL,
        SocpOpcode.START_SESSION,
        SocpOpcode.STOP_SESSION,
    ):
        raise CodecError(f"{req.opcode.name} is not a request this codec writes")
    return append_crc(payload) if e2e_crc else payload


@dataclass(frozen=True, slots=True)
class SocpResponse:
    opcode: SocpOpcode
    request_opcode: int | None = None
    response_code: SocpResponseCode | None = None
    interval_min: int | None = None


def encode_socp_response(resp: SocpResponse, *, e2e_crc: bool) -> bytes:
    payload = w.u8(int(resp.opcode))
    if resp.opcode is SocpOpcode.RESPONSE_CODE:
        if resp.request_opcode is None or resp.response_code is None:
            raise CodecError("Response Code needs request_opcode and response_code")
        payload += w.u8(resp.request_opcode) + w.u8(int(resp.response_code))
    elif resp.opcode is SocpOpcode.COMMUNICATION_INTERVAL_RESPONSE:
        if resp.interval_min is None:
            raise CodecError("Communication Interval response needs interval_min")
        payload += w.u8(resp.interval_min)
    else:
        raise CodecError(f"{resp.opcode.name} is not a response op code")
    return append_crc(payload) if e2e_crc else payload


def decode_socp_response(data: bytes, *, e2e_crc: bool) -> SocpResponse:
    if e2e_crc:
        data = split_and_check_crc(bytes(data), "CGM SOCP")
    r = Reader(data, "CGM SOCP")
    op = r.u8()
    if op == SocpOpcode.RESPONSE_CODE:
        request_op = r.u8()
        code = r.u8()
        r.end()
        try:
            response_code = SocpResponseCode(code)
        except ValueError as exc:
            raise CodecError(f"CGM SOCP: unknown response code {code}") from exc
        return SocpResponse(SocpOpcode.RESPONSE_CODE, request_op, response_code)
    if op == SocpOpcode.COMMUNICATION_INTERVAL_RESPONSE:
        interval = r.u8()
        r.end()
        return SocpResponse(SocpOpcode.COMMUNICATION_INTERVAL_RESPONSE, interval_min=interval)
    raise CodecError(f"CGM SOCP: op code {op} is not a supported response")

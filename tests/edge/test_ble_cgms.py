"""CGM Service codecs: hand-worked vectors and round trips."""

from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.ble import CodecError
from edge.ble.cgms import (
    CgmFeature,
    CgmFeatureFlag,
    CgmMeasurement,
    CgmStatus,
    SensorStatus,
    SessionRunTime,
    SessionStartTime,
    SocpOpcode,
    SocpRequest,
    SocpResponse,
    SocpResponseCode,
    decode_feature,
    decode_measurements,
    decode_session_run_time,
    decode_session_start_time,
    decode_socp_response,
    decode_status,
    encode_feature,
    encode_measurement,
    encode_session_run_time,
    encode_session_start_time,
    encode_socp_request,
    encode_socp_response,
    encode_status,
)
from edge.ble.crc import crc16_mcrf4xx
from edge.ble.mder import MderNumber, Special


def test_minimal_measurement_vector():
    # size 6, flags 0, glucose 120 (SFLOAT 0x0078), time offset 5 min
    wire = bytes.fromhex("060078000500")
    (m,) = decode_measurements(wire, e2e_crc=False)
    assert float(m.glucose_mg_dl) == 120.0
    assert m.time_offset_min == 5
    assert m.trend_mg_dl_per_min is None
    assert not m.sensor_status.any_set
    assert encode_measurement(m, e2e_crc=False) == wire


def test_full_measurement_with_crc_vector():
    # size 13 (0x0D); flags 0x83 = trend | quality | status octet; glucose 120; offset 5;
    # status octet 0x02 (device battery low); trend -1.5 (F1 FF); quality 95 % (5F 00);
    # E2E-CRC over the 11 octets before it = 0x1BA9 (checked against the bitwise reference)
    body = bytes.fromhex("0d837800050002f1ff5f00")
    assert crc16_mcrf4xx(body) == 0x1BA9
    wire = body + bytes.fromhex("a91b")
    (m,) = decode_measurements(wire, e2e_crc=True)
    assert float(m.glucose_mg_dl) == 120.0
    assert m.sensor_status.device_battery_low
    assert m.trend_mg_dl_per_min is not None
    assert m.quality_pct is not None
    assert float(m.trend_mg_dl_per_min) == -1.5
    assert float(m.quality_pct) == 95.0
    assert encode_measurement(m, e2e_crc=True) == wire


def test_corrupted_crc_is_rejected():
    wire = bytearray(bytes.fromhex("0d837800050002f1ff5f00a91b"))
    wire[2] ^= 0x01  # glucose 120 -> 121
    with pytest.raises(CodecError, match="CRC"):
        decode_measurements(bytes(wire), e2e_crc=True)


def test_two_records_in_one_notification():
    one = encode_measurement(CgmMeasurement(MderNumber(100), 10), e2e_crc=False)
    two = encode_measurement(CgmMeasurement(MderNumber(105), 15), e2e_crc=False)
    got = decode_measurements(one + two, e2e_crc=False)
    assert [float(r.glucose_mg_dl) for r in got] == [100.0, 105.0]


def test_measurement_errors():
    for bad in (b"", b"\x06", b"\x05\x00\x78\x00\x05", bytes.fromhex("060478000500")):
        with pytest.raises(CodecError):
            decode_measurements(bad, e2e_crc=False)
    # a record without the CRC the feature promises
    with pytest.raises(CodecError):
        decode_measurements(bytes.fromhex("060078000500"), e2e_crc=True)


def test_low_and_nan_glucose_decode_to_values_the_caller_must_check():
    (m,) = decode_measurements(bytes.fromhex("0720ff07050040"), e2e_crc=False)
    assert m.glucose_mg_dl.special is Special.NAN
    assert m.sensor_status.result_lower_than_device_can_process


def test_feature_vector_and_no_e2e_marker():
    f = CgmFeature(CgmFeatureFlag.E2E_CRC | CgmFeatureFlag.TREND_INFORMATION, 9, 5)
    wire = encode_feature(f)
    # features 0x009000 LE -> 00 90 00; type/location 0x59; CRC over those 4 octets
    assert wire[:4] == bytes.fromhex("00900059")
    assert wire[4:] == crc16_mcrf4xx(wire[:4]).to_bytes(2, "little")
    assert decode_feature(wire) == f
    plain = encode_feature(CgmFeature(CgmFeatureFlag.CALIBRATION, 9, 5))
    assert plain == bytes.fromhex("01000059ffff")
    with pytest.raises(CodecError):
        decode_feature(bytes.fromhex("010000591234"))


def test_status_session_times_and_socp():
    s = CgmStatus(30, SensorStatus(status=0x01, warning=0x40))
    assert encode_status(s, e2e_crc=False) == bytes.fromhex("1e00010040")
    assert decode_status(encode_status(s, e2e_crc=True), e2e_crc=True) == s
    sst = SessionStartTime(datetime(2026, 3, 1, 8, 30, 0), 4, 0)
    # 2026 = 0x07EA -> EA 07; 03 01 08 1E 00; tz +4 (UTC+1); DST 0
    assert encode_session_start_time(sst, e2e_crc=False) == bytes.fromhex("ea070301081e000400")
    assert decode_session_start_time(encode_session_start_time(sst, e2e_crc=True), e2e_crc=True)
    assert sst.to_utc().hour == 7
    srt = SessionRunTime(336)
    assert decode_session_run_time(encode_session_run_time(srt, e2e_crc=True), e2e_crc=True) == srt
    assert encode_socp_request(SocpRequest(SocpOpcode.START_SESSION), e2e_crc=False) == b"\x1a"
    assert encode_socp_request(
        SocpRequest(SocpOpcode.SET_COMMUNICATION_INTERVAL, interval_min=5), e2e_crc=False
    ) == bytes.fromhex("0105")
    resp = decode_socp_response(bytes.fromhex("1c1a01"), e2e_crc=False)
    assert resp.request_opcode == SocpOpcode.START_SESSION
    assert resp.response_code is SocpResponseCode.SUCCESS
    r2 = SocpResponse(SocpOpcode.RESPONSE_CODE, 27, SocpResponseCode.PROCEDURE_NOT_COMPLETED)
    assert decode_socp_response(encode_socp_response(r2, e2e_crc=True), e2e_crc=True) == r2
    with pytest.raises(CodecError):
        decode_session_start_time(bytes.fromhex("ea070d01081e000400"), e2e_crc=False)  # month 13


sfloat_parts = st.builds(MderNumber, st.integers(-2045, 2045), st.integers(-8, 7))


@st.composite
def measurements(draw):
    status = SensorStatus(
        status=draw(st.integers(0, 255)),
        cal_temp=draw(st.integers(0, 255)),
        warning=draw(st.integers(0, 255)),
    )
    warning_p, cal_temp_p, status_p = (
        draw(st.booleans()) or bool(v) for v in (status.warning, status.cal_temp, status.status)
    )
    present = (warning_p, cal_temp_p, status_p)
    return CgmMeasurement(
        glucose_mg_dl=draw(sfloat_parts),
        time_offset_min=draw(st.integers(0, 0xFFFF)),
        sensor_status=status,
        trend_mg_dl_per_min=draw(st.none() | sfloat_parts),
        quality_pct=draw(st.none() | sfloat_parts),
        status_octets_present=present,
    )


@settings(deadline=None)
@given(st.lists(measurements(), min_size=1, max_size=4), st.booleans())
def test_measurement_round_trip(records, crc):
    wire = b"".join(encode_measurement(m, e2e_crc=crc) for m in records)
    assert decode_measurements(wire, e2e_crc=crc) == records

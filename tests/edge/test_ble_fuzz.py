"""Random bytes into every decoder: the only exception that may come out is CodecError."""

import contextlib
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.ble import CodecError, cgms, ids
from edge.ble.crc import append_crc

DECODERS: dict[str, Callable[[bytes], object]] = {
    "cgm_measurement": lambda b: cgms.decode_measurements(b, e2e_crc=False),
    "cgm_measurement_crc": lambda b: cgms.decode_measurements(b, e2e_crc=True),
    "cgm_feature": cgms.decode_feature,
    "cgm_status": lambda b: cgms.decode_status(b, e2e_crc=False),
    "cgm_session_start": lambda b: cgms.decode_session_start_time(b, e2e_crc=False),
    "cgm_session_run": lambda b: cgms.decode_session_run_time(b, e2e_crc=True),
    "cgm_socp": lambda b: cgms.decode_socp_response(b, e2e_crc=False),
    "idd_status": lambda b: ids.decode_status(b, e2e=False),
    "idd_command": lambda b: ids.decode_command(b, e2e=False),
    "idd_command_e2e": lambda b: ids.decode_command(b, e2e=True),
    "idd_response": lambda b: ids.decode_command_response(b, e2e=False),
    "idd_history": lambda b: ids.decode_history(b, e2e=False),
}


@pytest.mark.parametrize("name", sorted(DECODERS))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=40))
def test_random_bytes_only_raise_codec_error(name, data):
    with contextlib.suppress(CodecError):
        DECODERS[name](data)


@pytest.mark.parametrize("name", ["cgm_session_run", "idd_command_e2e"])
@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=30))
def test_random_payloads_with_a_valid_crc_only_raise_codec_error(name, data):
    # a valid CRC gets the payload past the first gate; the field parsing must still hold
    with contextlib.suppress(CodecError):
        DECODERS[name](append_crc(data))

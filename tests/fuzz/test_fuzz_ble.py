"""Mutated valid Bluetooth frames (bit flips, truncation, extension, re-CRC'd bodies) into every
CGMS/IDS decoder: CodecError or a value, nothing else. tests/edge/test_ble_fuzz.py covers
purely random bytes; mutating real frames gets past the length and CRC gates into field parsing.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.ble import CodecError, cgms, ids
from edge.ble.crc import append_crc
from edge.ble.mder import MderNumber
from tests.fuzz.conftest import Tally, examples

# name -> (decoder, valid frames, whether the frame ends in an E2E-CRC)
Decoder = Callable[[bytes], object]
SEEDS: dict[str, tuple[Decoder, list[bytes], bool]] = {
    "cgm_measurement": (
        lambda b: cgms.decode_measurements(b, e2e_crc=False),
        [
            bytes.fromhex("060078000500"),
            bytes.fromhex("0720ff07050040"),
            cgms.encode_measurement(cgms.CgmMeasurement(MderNumber(100), 10), e2e_crc=False)
            + cgms.encode_measurement(cgms.CgmMeasurement(MderNumber(105), 15), e2e_crc=False),
        ],
        False,
    ),
    "cgm_measurement_crc": (
        lambda b: cgms.decode_measurements(b, e2e_crc=True),
        [bytes.fromhex("0d837800050002f1ff5f00a91b")],
        True,
    ),
    "cgm_feature": (cgms.decode_feature, [bytes.fromhex("01000059ffff")], False),
    "cgm_status": (
        lambda b: cgms.decode_status(b, e2e_crc=False),
        [bytes.fromhex("1e00010040")],
        False,
    ),
    "cgm_session_start": (
        lambda b: cgms.decode_session_start_time(b, e2e_crc=False),
        [bytes.fromhex("ea070301081e000400")],
        False,
    ),
    "cgm_socp": (
        lambda b: cgms.decode_socp_response(b, e2e_crc=False),
        [bytes.fromhex("1c1a01")],
        False,
    ),
    "idd_command": (
        lambda b: ids.decode_command(b, e2e=False),
        [
            bytes.fromhex("4b110433ebe0000000005a"),
            bytes.fromhex("1111"),
            bytes.fromhex("78110201"),
            bytes.fromhex("5a0f3c"),
        ],
        False,
    ),
    "idd_command_e2e": (
        lambda b: ids.decode_command(b, e2e=True),
        [append_crc(bytes.fromhex("ff0f02330ff01e005507"))],
        True,
    ),
    "idd_response": (
        lambda b: ids.decode_command_response(b, e2e=False),
        [bytes.fromhex("550f8e140f")],
        False,
    ),
}


@st.composite
def mutated(draw: st.DrawFn, frames: list[bytes], crc: bool) -> bytes:
    frame = bytearray(draw(st.sampled_from(frames)))
    body = frame[:-2] if crc else frame
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "cut", "extend", "insert", "delete"]))
        if op in {"flip", "set", "delete", "cut"} and not body:
            op = "extend"
        if op == "flip":
            i = draw(st.integers(0, len(body) - 1))
            body[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            i = draw(st.integers(0, len(body) - 1))
            body[i] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF, draw(st.integers(0, 255))]))
        elif op == "cut":
            body = body[: draw(st.integers(0, len(body) - 1))]
        elif op == "extend":
            body += draw(st.binary(min_size=1, max_size=8))
        elif op == "insert":
            i = draw(st.integers(0, len(body)))
            body[i:i] = draw(st.binary(min_size=1, max_size=3))
        else:
            del body[draw(st.integers(0, len(body) - 1))]
    # Half the time give the mutated body a correct CRC so field parsing is what gets tested.
    if crc and draw(st.booleans()):
        return append_crc(bytes(body))
    return bytes(body) + (bytes(frame[-2:]) if crc else b"")


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_mutated_frames_give_a_value_or_codec_error(name: str, tally: Tally) -> None:
    decoder, frames, crc = SEEDS[name]
    for frame in frames:  # the seeds themselves are valid
        decoder(frame)

    @settings(max_examples=examples(), deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=mutated(frames, crc))
    def run(data: bytes) -> None:
        try:
            decoder(data)
        except CodecError:
            tally.record(f"ble.{name}", "parse_error")
            return
        except Exception:
            tally.record(f"ble.{name}", "unexpected")
            raise
        tally.record(f"ble.{name}", "ok")

    run()

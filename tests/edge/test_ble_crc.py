"""E2E-CRC: the table implementation against a bit-by-bit reading of the spec definition."""

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.ble.crc import append_crc, crc16_mcrf4xx


def _reference_crc(data: bytes) -> int:
    """Straight from the CGMS text: g(D)=D16+D12+D5+1, seed 0xFFFF, bits fed LSB first.

    Runs the non-reflected shift register (MSB-first, polynomial 0x1021) on bit-reversed octets
    and bit-reverses the result: an independent derivation from the table code under test.
    """

    def reverse(value: int, width: int) -> int:
        return int(f"{value:0{width}b}"[::-1], 2)

    crc = 0xFFFF
    crc = reverse(crc, 16)  # the seed is loaded in transmission order
    for byte in data:
        crc ^= reverse(byte, 8) << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return reverse(crc, 16)


def test_catalogue_check_value():
    # CRC-16/MCRF4XX check value for the ASCII string "123456789"
    assert crc16_mcrf4xx(b"123456789") == 0x6F91


def test_cgm_session_run_time_vector():
    # 2 hours, little-endian 02 00; the CRC 0xC308 is the value Nordic's CGMS tests use
    assert append_crc(b"\x02\x00") == bytes.fromhex("020008c3")


@settings(deadline=None)
@given(st.binary(max_size=64))
def test_table_matches_bitwise_reference(data):
    assert crc16_mcrf4xx(data) == _reference_crc(data)

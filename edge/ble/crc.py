"""E2E-CRC of the Bluetooth CGM Service and Insulin Delivery Service.

The CGMS text defines it as "CRC-CCITT generator polynomial g(D)=D16+D12+D5+1 (i.e. 210041 in
octal representation) with a seed of 0xFFFF". Bluetooth sends the least significant bit first,
so the register runs reflected (0x1021 reversed is 0x8408), with no final XOR; in the common
CRC catalogue this is CRC-16/MCRF4XX (check value 0x6F91 for b"123456789"). The CRC is sent
little-endian after the octets it covers.
"""

from __future__ import annotations

from edge.ble.errors import CodecError

__all__ = ["append_crc", "crc16_mcrf4xx", "split_and_check_crc"]

_POLY_REFLECTED = 0x8408
_SEED = 0xFFFF


def _make_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _POLY_REFLECTED if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _make_table()


def crc16_mcrf4xx(data: bytes, seed: int = _SEED) -> int:
    """CRC-CCITT (0x1021, seed 0xFFFF) computed LSB-first, as CGMS/IDS E2E protection uses."""
    crc = seed
    for byte in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ byte) & 0xFF]
    return crc


def append_crc(payload: bytes) -> bytes:
    """`payload` followed by its E2E-CRC (little-endian)."""
    return payload + crc16_mcrf4xx(payload).to_bytes(2, "little")


def split_and_check_crc(frame: bytes, what: str) -> bytes:
    """The payload of `frame` after checking its trailing E2E-CRC; `CodecError` if it is wrong."""
    if len(frame) < 2:
        raise CodecError(f"{what}: too short to hold an E2E-CRC")
    payload, received = frame[:-2], int.from_bytes(frame[-2:], "little")
    expected = crc16_mcrf4xx(payload)
    if received != expected:
        raise CodecError(
            f"{what}: E2E-CRC mismatch (received 0x{received:04X}, computed 0x{expected:04X})"
        )
    return payload

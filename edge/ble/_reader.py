"""Bounds-checked little-endian reading and writing for the codecs."""

from __future__ import annotations

from edge.ble.errors import CodecError


class Reader:
    """Consumes a byte string field by field; any overrun is a `CodecError`."""

    __slots__ = ("_data", "_pos", "_what")

    def __init__(self, data: bytes, what: str) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise CodecError(f"{what}: expected bytes, got {type(data).__name__}")
        self._data = bytes(data)
        self._pos = 0
        self._what = what

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def take(self, n: int) -> bytes:
        if n < 0 or self._pos + n > len(self._data):
            raise CodecError(
                f"{self._what}: truncated, needed {n} more octet(s) at offset {self._pos}, "
                f"have {self.remaining}"
            )
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "little")

    def u24(self) -> int:
        return int.from_bytes(self.take(3), "little")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "little")

    def s8(self) -> int:
        return int.from_bytes(self.take(1), "little", signed=True)

    def end(self) -> None:
        if self.remaining:
            raise CodecError(f"{self._what}: {self.remaining} unexpected trailing octet(s)")


def u8(value: int) -> bytes:
    return _uint(value, 1)


def u16(value: int) -> bytes:
    return _uint(value, 2)


def u24(value: int) -> bytes:
    return _uint(value, 3)


def u32(value: int) -> bytes:
    return _uint(value, 4)


def s8(value: int) -> bytes:
    if not -128 <= value <= 127:
        raise CodecError(f"value {value} does not fit a signed 8-bit field")
    return value.to_bytes(1, "little", signed=True)


def _uint(value: int, size: int) -> bytes:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << (8 * size):
        raise CodecError(f"value {value!r} does not fit an unsigned {8 * size}-bit field")
    return value.to_bytes(size, "little")

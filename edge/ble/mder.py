"""IEEE 11073-20601 SFLOAT (16-bit) and FLOAT (32-bit) numbers as Bluetooth SIG services use them.

SFLOAT: a signed 4-bit exponent (high nibble) and a signed 12-bit mantissa, value =
mantissa × 10^exponent, both two's complement, sent little-endian. FLOAT: a signed 8-bit
exponent (high octet) and a signed 24-bit mantissa. With exponent 0 the mantissas at the top
and bottom of the range are special values:

| meaning           | SFLOAT | FLOAT      |
|-------------------|--------|------------|
| +INFINITY         | 0x07FE | 0x007FFFFE |
| NaN               | 0x07FF | 0x007FFFFF |
| NRes (not at this resolution) | 0x0800 | 0x00800000 |
| reserved          | 0x0801 | 0x00800001 |
| −INFINITY         | 0x0802 | 0x00800002 |

Finite values therefore use mantissas in ±2045 (SFLOAT) and ±8 388 605 (FLOAT). A reserved
mantissa with a non-zero exponent is not a number the standard defines; the decoder rejects it
rather than guess. Values are carried as `decimal.Decimal` so 2.35 U stays 2.35 U.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from enum import Enum

from edge.ble.errors import CodecError

__all__ = [
    "FLOAT_MANTISSA_MAX",
    "SFLOAT_MANTISSA_MAX",
    "MderNumber",
    "Special",
    "decode_float",
    "decode_sfloat",
    "encode_float",
    "encode_sfloat",
]

SFLOAT_MANTISSA_MAX = 2045
FLOAT_MANTISSA_MAX = (1 << 23) - 3


class Special(Enum):
    """The non-numeric values of IEEE 11073-20601."""

    NAN = "NaN"
    NRES = "NRes"
    POSITIVE_INFINITY = "+INFINITY"
    NEGATIVE_INFINITY = "-INFINITY"
    RESERVED = "reserved"


@dataclass(frozen=True, slots=True)
class MderNumber:
    """A decoded number: either `mantissa × 10^exponent` or a `special` value."""

    mantissa: int = 0
    exponent: int = 0
    special: Special | None = None

    @property
    def is_finite(self) -> bool:
        return self.special is None

    @property
    def decimal(self) -> Decimal:
        """Exact value; `CodecError` for a special value."""
        if self.special is not None:
            raise CodecError(f"value is {self.special.value}, not a number")
        return Decimal(self.mantissa).scaleb(self.exponent)

    def __float__(self) -> float:
        if self.special is Special.POSITIVE_INFINITY:
            return math.inf
        if self.special is Special.NEGATIVE_INFINITY:
            return -math.inf
        if self.special is not None:
            return math.nan
        return float(self.decimal)


# (mantissa bits, exponent bits) for each format; specials are raw values with exponent 0.
_SFLOAT = (12, 4)
_FLOAT = (24, 8)


def _specials(mantissa_bits: int) -> dict[int, Special]:
    top = (1 << (mantissa_bits - 1)) - 1  # 0x7FF / 0x7FFFFF
    return {
        top - 1: Special.POSITIVE_INFINITY,
        top: Special.NAN,
        top + 1: Special.NRES,
        top + 2: Special.RESERVED,
        top + 3: Special.NEGATIVE_INFINITY,
    }


_SPECIALS = {fmt: _specials(fmt[0]) for fmt in (_SFLOAT, _FLOAT)}
_SPECIAL_RAW = {fmt: {v: k for k, v in table.items()} for fmt, table in _SPECIALS.items()}


def _decode(raw: int, fmt: tuple[int, int]) -> MderNumber:
    m_bits, e_bits = fmt
    mantissa_raw = raw & ((1 << m_bits) - 1)
    exponent_raw = raw >> m_bits
    specials = _SPECIALS[fmt]
    if mantissa_raw in specials:
        if exponent_raw == 0:
            return MderNumber(special=specials[mantissa_raw])
        raise CodecError(
            f"reserved mantissa 0x{mantissa_raw:X} with exponent {exponent_raw} is not a number"
        )
    mantissa = mantissa_raw - (1 << m_bits) if mantissa_raw >> (m_bits - 1) else mantissa_raw
    exponent = exponent_raw - (1 << e_bits) if exponent_raw >> (e_bits - 1) else exponent_raw
    return MderNumber(mantissa=mantissa, exponent=exponent)


def _encode(
    value: float | Decimal | Special | MderNumber, fmt: tuple[int, int], exact_only: bool
) -> int:
    m_bits, e_bits = fmt
    if isinstance(value, MderNumber):
        if value.special is not None:
            value = value.special
        else:
            return _pack(value.mantissa, value.exponent, fmt)
    if isinstance(value, Special):
        return _SPECIAL_RAW[fmt][value]
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise CodecError(f"cannot encode {value!r} as an 11073 number")
    if isinstance(value, float):
        if math.isnan(value):
            return _SPECIAL_RAW[fmt][Special.NAN]
        if math.isinf(value):
            special = Special.POSITIVE_INFINITY if value > 0 else Special.NEGATIVE_INFINITY
            return _SPECIAL_RAW[fmt][special]
        # repr gives the shortest decimal that reads back as the same float: 2.35 -> "2.35"
        exact = Decimal(repr(value))
    else:
        exact = Decimal(value)
        if not exact.is_finite():
            raise CodecError(f"cannot encode {value!r}; pass Special or a float NaN/inf")
    m_max = (1 << (m_bits - 1)) - 3
    e_min, e_max = -(1 << (e_bits - 1)), (1 << (e_bits - 1)) - 1
    for candidate in range(e_min, e_max + 1):
        try:
            mantissa = int(exact.scaleb(-candidate).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
        except InvalidOperation:  # quantize overflow for huge values at small exponents
            continue
        if abs(mantissa) <= m_max:
            if exact_only and Decimal(mantissa).scaleb(candidate) != exact:
                raise CodecError(f"{value!r} is not exactly representable; refusing to round")
            exponent = candidate
            # drop trailing zeros of a fractional representation: 2.500 -> 25e-1
            while exponent < 0 and mantissa != 0 and mantissa % 10 == 0:
                mantissa //= 10
                exponent += 1
            if mantissa == 0:
                exponent = 0
            return _pack(mantissa, exponent, fmt)
    raise CodecError(f"{value!r} is too large for a {m_bits + e_bits}-bit 11073 number")


def _pack(mantissa: int, exponent: int, fmt: tuple[int, int]) -> int:
    m_bits, e_bits = fmt
    m_max = (1 << (m_bits - 1)) - 3
    e_min, e_max = -(1 << (e_bits - 1)), (1 << (e_bits - 1)) - 1
    if not -m_max <= mantissa <= m_max:
        raise CodecError(f"mantissa {mantissa} outside ±{m_max}")
    if not e_min <= exponent <= e_max:
        raise CodecError(f"exponent {exponent} outside {e_min}..{e_max}")
    return ((exponent & ((1 << e_bits) - 1)) << m_bits) | (mantissa & ((1 << m_bits) - 1))


def encode_sfloat(
    value: float | Decimal | Special | MderNumber, *, exact_only: bool = False
) -> bytes:
    """Two octets (little-endian); the finest exponent whose mantissa fits, rounding half-even.

    A value too large for SFLOAT raises `CodecError` (it is never clipped). With `exact_only`
    (used for insulin amounts) a value that would need rounding raises instead.
    """
    return _encode(value, _SFLOAT, exact_only).to_bytes(2, "little")


def decode_sfloat(data: bytes) -> MderNumber:
    """Decode exactly two octets."""
    if len(data) != 2:
        raise CodecError(f"SFLOAT needs 2 octets, got {len(data)}")
    return _decode(int.from_bytes(data, "little"), _SFLOAT)


def encode_float(
    value: float | Decimal | Special | MderNumber, *, exact_only: bool = False
) -> bytes:
    """Four octets (little-endian) of an 11073 32-bit FLOAT."""
    return _encode(value, _FLOAT, exact_only).to_bytes(4, "little")


def decode_float(data: bytes) -> MderNumber:
    """Decode exactly four octets."""
    if len(data) != 4:
        raise CodecError(f"FLOAT needs 4 octets, got {len(data)}")
    return _decode(int.from_bytes(data, "little"), _FLOAT)

"""IEEE 11073 SFLOAT/FLOAT: hand-worked vectors, special values, round trips."""

import math
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.ble import CodecError
from edge.ble.mder import (
    FLOAT_MANTISSA_MAX,
    SFLOAT_MANTISSA_MAX,
    MderNumber,
    Special,
    decode_float,
    decode_sfloat,
    encode_float,
    encode_sfloat,
)


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        # 120 mg/dL: mantissa 120 = 0x078, exponent 0 -> 0x0078 -> 78 00
        (120.0, "7800"),
        # 2.35 U: mantissa 235 = 0x0EB, exponent -2 = 0xE -> 0xE0EB -> EB E0
        (2.35, "ebe0"),
        # -1.5: mantissa -15 = 0xFF1 (12-bit two's complement), exponent -1 = 0xF -> F1 FF
        (-1.5, "f1ff"),
        # 5000 does not fit 12 bits at exponent 0: mantissa 500, exponent 1 -> 0x11F4
        (5000, "f411"),
        (0.0, "0000"),
    ],
)
def test_sfloat_vectors(value, wire):
    assert encode_sfloat(value).hex() == wire
    assert float(decode_sfloat(bytes.fromhex(wire))) == pytest.approx(value)


@pytest.mark.parametrize(
    ("wire", "special"),
    [
        ("fe07", Special.POSITIVE_INFINITY),
        ("ff07", Special.NAN),
        ("0008", Special.NRES),
        ("0108", Special.RESERVED),
        ("0208", Special.NEGATIVE_INFINITY),
    ],
)
def test_sfloat_special_values(wire, special):
    assert encode_sfloat(special).hex() == wire
    decoded = decode_sfloat(bytes.fromhex(wire))
    assert decoded.special is special
    assert encode_sfloat(decoded).hex() == wire
    assert not decoded.is_finite
    with pytest.raises(CodecError):
        _ = decoded.decimal


def test_float_special_values_and_vector():
    assert decode_float(bytes.fromhex("ffff7f00")).special is Special.NAN
    assert decode_float(bytes.fromhex("00008000")).special is Special.NRES
    assert decode_float(bytes.fromhex("feff7f00")).special is Special.POSITIVE_INFINITY
    assert decode_float(bytes.fromhex("02008000")).special is Special.NEGATIVE_INFINITY
    # 123.456 -> mantissa 123456 = 0x01E240, exponent -3 = 0xFD -> FD01E240 -> 40 E2 01 FD
    assert encode_float(123.456).hex() == "40e201fd"
    assert decode_float(bytes.fromhex("40e201fd")).decimal == Decimal("123.456")


def test_float_nan_and_inf_encode_to_specials():
    assert encode_sfloat(math.nan).hex() == "ff07"
    assert encode_sfloat(math.inf).hex() == "fe07"
    assert encode_float(-math.inf).hex() == "02008000"
    assert math.isnan(float(decode_sfloat(b"\xff\x07")))


def test_reserved_mantissa_with_nonzero_exponent_is_rejected():
    with pytest.raises(CodecError):
        decode_sfloat(bytes.fromhex("ff17"))  # mantissa 0x7FF with exponent 1


def test_too_large_raises_instead_of_clipping():
    with pytest.raises(CodecError):
        encode_sfloat(2046e7)
    with pytest.raises(CodecError):
        encode_sfloat(Decimal("1e40"))


def test_wrong_length_raises_codec_error():
    for bad in (b"", b"\x01", b"\x01\x02\x03"):
        with pytest.raises(CodecError):
            decode_sfloat(bad)
    with pytest.raises(CodecError):
        decode_float(b"\x00\x00\x00")


@settings(deadline=None)
@given(
    st.integers(-SFLOAT_MANTISSA_MAX, SFLOAT_MANTISSA_MAX),
    st.integers(-8, 7),
)
def test_sfloat_parts_round_trip(mantissa, exponent):
    n = MderNumber(mantissa, exponent)
    assert decode_sfloat(encode_sfloat(n)) == n


@settings(deadline=None)
@given(st.integers(-FLOAT_MANTISSA_MAX, FLOAT_MANTISSA_MAX), st.integers(-128, 127))
def test_float_parts_round_trip(mantissa, exponent):
    n = MderNumber(mantissa, exponent)
    assert decode_float(encode_float(n)) == n


@settings(deadline=None)
@given(st.decimals(min_value=Decimal("-2045"), max_value=Decimal("2045"), places=2))
def test_sfloat_value_round_trip_within_resolution(value):
    decoded = decode_sfloat(encode_sfloat(value)).decimal
    # the finest exponent whose mantissa fits is chosen: the mantissa then has at least 205
    # units, so rounding costs at most half a unit, i.e. 0.25 % (or the 0.005 of 2 places)
    assert abs(decoded - value) <= abs(value) * Decimal("0.0025") + Decimal("0.005")


@settings(deadline=None)
@given(st.binary(min_size=2, max_size=2))
def test_any_two_octets_decode_or_raise_codec_error(data):
    try:
        decoded = decode_sfloat(data)
    except CodecError:
        return
    if decoded.is_finite:
        assert decode_sfloat(encode_sfloat(decoded)).decimal == decoded.decimal

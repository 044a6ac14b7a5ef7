"""Every attribute exact for every type and width, against an independent decode of the
element's raw bytes (issue 17's target).

The element's bytes are drawn; tcp-ingestion's value is derived from them the way it
sends fixed-width elements (unsigned big-endian integer, contract v1) or NX ones (a byte
string, stored as hex). The expected value comes from `struct` (signed/unsigned of each
width) and `fractions.Fraction` (exact rational arithmetic for the scale), never from
the decoder's own helpers."""

from __future__ import annotations

import math
import re
import struct
from decimal import Decimal
from fractions import Fraction
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.domain.attributes import Unfit, decode_value, parse_mapping, same_value
from processor.domain_runner.attributes import encode_attributes

UNSIGNED = {1: ">B", 2: ">H", 4: ">I", 8: ">Q"}
SIGNED = {1: ">b", 2: ">h", 4: ">i", 8: ">q"}
widths = st.sampled_from([1, 2, 4, 8])
# Multipliers and offsets as numeric(18, 9) holds them (neither 0 nor 1: no scale then).
scale_numbers = st.decimals(
    min_value=Decimal("-999999999"),
    max_value=Decimal("999999999"),
    places=9,
    allow_nan=False,
    allow_infinity=False,
)
_read_back = msgspec.json.Decoder(dict[str, Any], float_hook=Decimal).decode


def element(width: int, data: bytes, nx: bool) -> int | str:
    """The value as the processor stores it: an integer, or the NX buffer's hex."""
    return data.hex() if nx else int.from_bytes(data, "big")


def mapping(kind: str, **fields: Any) -> Any:
    return parse_mapping({"model": "*", "io_id": 1, "name": "v", "type": kind, **fields})


def exact_in_json(value: object) -> None:
    """What position_attributes stores reads back as the same value."""
    assert same_value(_read_back(encode_attributes({"v": value}))["v"], value)  # type: ignore[dict-item]


@settings(max_examples=300)
@given(width=widths, data=st.data(), nx=st.booleans())
def test_integers_are_their_bytes_read_with_the_width(
    width: int, data: st.DataObject, nx: bool
) -> None:
    raw = data.draw(st.binary(min_size=width, max_size=width))
    value = element(width, raw, nx)
    unsigned = decode_value(value, mapping("unsigned", width=width))
    signed = decode_value(value, mapping("signed", width=width))
    assert unsigned == struct.unpack(UNSIGNED[width], raw)[0]
    assert signed == struct.unpack(SIGNED[width], raw)[0]
    assert type(unsigned) is int
    assert type(signed) is int
    exact_in_json(unsigned)
    exact_in_json(signed)
    expected_bool = {0: False, 1: True}.get(struct.unpack(UNSIGNED[width], raw)[0])
    boolean = decode_value(value, mapping("boolean", width=width))
    if expected_bool is None:
        assert isinstance(boolean, Unfit)
    else:
        assert boolean is expected_bool


@settings(max_examples=300)
@given(
    width=widths,
    data=st.data(),
    kind=st.sampled_from(["unsigned", "signed"]),
    multiplier=scale_numbers.filter(lambda d: d not in (0, 1)),
    offset=st.none() | scale_numbers,
    decimals=st.none() | st.integers(min_value=0, max_value=9),
)
def test_scaled_numbers_are_exact_rationals(
    width: int,
    data: st.DataObject,
    kind: str,
    multiplier: Decimal,
    offset: Decimal | None,
    decimals: int | None,
) -> None:
    raw = data.draw(st.binary(min_size=width, max_size=width))
    integer = struct.unpack((UNSIGNED if kind == "unsigned" else SIGNED)[width], raw)[0]
    expected = Fraction(integer) * Fraction(multiplier) + Fraction(offset or 0)
    if decimals is not None:  # half away from zero, to `decimals` places
        scaled = abs(expected) * 10**decimals
        rounded = math.floor(scaled + Fraction(1, 2))
        expected = Fraction(rounded if expected >= 0 else -rounded, 10**decimals)
    found = decode_value(
        element(width, raw, nx=False),
        mapping(kind, width=width, multiplier=multiplier, offset_value=offset, decimals=decimals),
    )
    assert isinstance(found, Decimal)
    assert Fraction(found) == expected
    assert "E" not in encode_attributes({"v": found})
    if decimals is not None:
        assert -found.as_tuple().exponent == decimals  # type: ignore[operator]
    exact_in_json(found)


def unescape(text: str) -> bytes:
    """The inverse of the ascii type's escaping, written independently (a regex)."""
    out = bytearray()
    for token in re.findall(r"\\\\|\\x[0-9a-f]{2}|[\x20-\x7e]", text):
        if token == "\\\\":
            out += b"\\"
        elif token.startswith("\\x"):
            out.append(int(token[2:], 16))
        else:
            out += token.encode("ascii")
    assert len("".join(re.findall(r"\\\\|\\x[0-9a-f]{2}|[\x20-\x7e]", text))) == len(text)
    return bytes(out)


@settings(max_examples=300)
@given(raw=st.binary(max_size=64))
def test_ascii_is_lossless_visible_text(raw: bytes) -> None:
    text = decode_value(raw.hex(), mapping("ascii"))
    assert isinstance(text, str)
    assert all(32 <= ord(c) < 127 for c in text)  # nothing invisible, nothing non-ASCII
    assert unescape(text) == raw.rstrip(b"\x00")
    exact_in_json(text)


@settings(max_examples=200)
@given(width=widths, data=st.data(), nx=st.booleans())
def test_hex_is_the_elements_bytes(width: int, data: st.DataObject, nx: bool) -> None:
    raw = data.draw(st.binary(min_size=width, max_size=width))
    assert decode_value(element(width, raw, nx), mapping("hex", width=width)) == raw.hex()


@settings(max_examples=200)
@given(width=widths, data=st.data())
def test_enum_labels_the_unsigned_value(width: int, data: st.DataObject) -> None:
    raw = data.draw(st.binary(min_size=width, max_size=width))
    integer = int.from_bytes(raw, "big")
    labels = {str(integer): "this one", str(integer + 1): "the next"}
    found = decode_value(element(width, raw, nx=False), mapping("enum", width=width, labels=labels))
    assert found == "this one"


@settings(max_examples=200)
@given(width=widths, data=st.data())
def test_a_value_wider_than_its_element_is_always_unfit(width: int, data: st.DataObject) -> None:
    value = data.draw(st.integers(min_value=1 << (8 * width), max_value=1 << 72))
    for kind in ("unsigned", "signed", "boolean", "hex"):
        assert isinstance(decode_value(value, mapping(kind, width=width)), Unfit)

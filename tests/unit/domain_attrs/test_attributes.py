"""IO attribute decoding (ADR 0013): every type, with values shaped as real Teltonika
records arrive (tcp-ingestion sends fixed-width elements as unsigned integers, NX
elements as byte strings, stored as hex); invalid rows; model over wildcard; versions."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from processor.domain.attributes import (
    IoMapping,
    MappingTable,
    Unfit,
    ascii_text,
    decode_attributes,
    decode_value,
    load_mappings,
    parse_mapping,
    same_value,
)
from processor.domain_runner.attributes import encode_attributes


def m(io_id: int, kind: str, **fields: Any) -> IoMapping:
    return parse_mapping(
        {"model": "*", "io_id": io_id, "name": f"io{io_id}", "type": kind, **fields}
    )


def one(raw: int | str, mapping: IoMapping) -> object:
    return decode_value(raw, mapping)


# --- integers ----------------------------------------------------------------------------


def test_an_8_byte_value_above_2_53_stays_exact() -> None:
    """Issue 17: iButton raw 72069690697717651 came out as 72069690697717648 (× 1.0)."""
    raw = 72069690697717651
    assert one(raw, m(78, "unsigned", width=8, multiplier=1)) == raw
    assert one(raw, m(78, "unsigned", width=8, multiplier=Decimal("1.000000000"))) == raw
    assert type(one(raw, m(78, "unsigned", width=8))) is int
    assert one(2**64 - 1, m(78, "unsigned", width=8)) == 2**64 - 1
    assert one(raw, m(78, "hex", width=8)) == "01000b00791c1793"
    # The JSON written to position_attributes carries every digit.
    assert encode_attributes({"ibutton": raw}) == '{"ibutton":72069690697717651}'


@pytest.mark.parametrize(
    ("width", "raw", "expected"),
    [
        (1, 0x7F, 127),
        (1, 0x80, -128),
        (1, 0xFF, -1),
        (2, 0xFFE5, -27),  # the accelerometer axis of issue 17 (65509)
        (2, 0x7FFF, 32767),
        (2, 0x8000, -32768),
        (4, 0xFFFFFF06, -250),  # a Dallas temperature of -25.0 °C in 0.1 °C
        (4, 0x7FFFFFFF, 2**31 - 1),
        (4, 0x80000000, -(2**31)),
        (8, 2**64 - 1, -1),
        (8, 2**63, -(2**63)),
        (8, 2**63 - 1, 2**63 - 1),
    ],
)
def test_signed_elements_at_their_extremes(width: int, raw: int, expected: int) -> None:
    assert one(raw, m(17, "signed", width=width)) == expected


def test_a_negative_value_from_another_producer_is_taken_as_signed() -> None:
    assert one(-27, m(17, "signed", width=2)) == -27
    assert one(-32769, m(17, "signed", width=2)) == Unfit(
        m(17, "signed", width=2), "out_of_range", -32769
    )
    assert isinstance(one(-1, m(16, "unsigned")), Unfit)


def test_a_value_outside_the_width_is_unfit_never_truncated() -> None:
    axis = m(17, "signed", width=2)
    assert one(65536, axis) == Unfit(axis, "out_of_range", 65536)
    odometer = m(16, "unsigned", width=4)
    assert one(2**32, odometer) == Unfit(odometer, "out_of_range", 2**32)
    assert one(2**32 - 1, odometer) == 2**32 - 1
    # Without a width, any size: a 64-bit or larger value as given.
    assert one(2**70, m(16, "unsigned")) == 2**70


# --- scaled numbers ----------------------------------------------------------------------


def test_scaled_values_are_exact_decimals() -> None:
    volts = m(66, "unsigned", width=2, multiplier="0.001")
    assert one(12845, volts) == Decimal("12.845")
    assert one(65535, volts) == Decimal("65.535")
    # Multiplier from SQL numeric(18, 9): trailing zeros do not leak into the value.
    assert str(one(12845, m(66, "unsigned", multiplier=Decimal("0.001000000")))) == "12.845"
    dallas = m(72, "signed", width=4, multiplier="0.1")
    assert one(0xFFFFFF06, dallas) == Decimal("-25")
    assert one(0xFFFFFDDA, dallas) == Decimal("-55")  # the sensor's minimum, -550
    assert one(1150, dallas) == Decimal("115")
    assert one(1, dallas) == Decimal("0.1")  # not 0.1000000000000000055511151231257827
    assert encode_attributes({"t": one(1, dallas)}) == '{"t":0.1}'  # type: ignore[dict-item]


def test_an_8_byte_value_times_a_9_decimal_multiplier_is_exact() -> None:
    value = one(2**64 - 1, m(1, "unsigned", width=8, multiplier="0.000000001"))
    assert value == Decimal("18446744073.709551615")


def test_offset_and_decimals() -> None:
    kelvin = m(1, "signed", width=2, multiplier="0.1", offset_value="273.15")
    assert one(250, kelvin) == Decimal("298.15")
    rounded = m(181, "unsigned", width=2, multiplier="0.1", decimals=0)
    assert one(15, rounded) == Decimal("2")  # 1.5 rounds half away from zero
    assert one(14, rounded) == Decimal("1")
    assert str(one(15, m(181, "unsigned", width=2, multiplier="0.1", decimals=2))) == "1.50"
    assert one(-15, m(1, "signed", width=2, multiplier="0.1", decimals=0)) == Decimal("-2")
    # decimals without a multiplier: the integer as a number with that many places
    assert str(one(12, m(1, "unsigned", decimals=1))) == "12.0"


def test_no_exponent_notation() -> None:
    assert str(one(1, m(1, "unsigned", multiplier="1000"))) == "1000"
    assert encode_attributes({"x": one(3, m(1, "unsigned", multiplier="100"))}) == '{"x":300}'  # type: ignore[dict-item]


# --- boolean, enum ------------------------------------------------------------------------


def test_boolean_is_true_or_false_and_nothing_else() -> None:
    ignition = m(239, "boolean", width=1)
    assert one(1, ignition) is True
    assert one(0, ignition) is False
    assert one(2, ignition) == Unfit(ignition, "not_boolean", 2)
    assert one("01", ignition) is True  # a 1-byte NX element
    assert encode_attributes({"ignition": True}) == '{"ignition":true}'  # not 1.0


def test_enum_labels_and_an_unknown_value() -> None:
    gnss = m(69, "enum", width=1, labels={"0": "off", "1": "fix", "2": "no fix", "3": "sleep"})
    assert [one(v, gnss) for v in range(4)] == ["off", "fix", "no fix", "sleep"]
    assert one(7, gnss) == Unfit(gnss, "unknown_label", 7)
    from_json = m(69, "enum", labels='{"0": "off", "1": "fix"}')  # Directus REST: a string
    assert one(1, from_json) == "fix"


# --- byte strings: hex, ascii, NX -----------------------------------------------------------


def test_nx_buffers() -> None:
    assert one("0a0b0c", m(385, "hex")) == "0a0b0c"
    assert one("", m(385, "hex")) == ""  # an empty buffer is a value
    assert one("", m(256, "ascii")) == ""
    assert one("", m(16, "unsigned")) == Unfit(m(16, "unsigned"), "empty", "")
    assert one("0102", m(16, "unsigned")) == 0x0102  # a numeric NX element: big-endian
    assert one("ffe5", m(17, "signed", width=2)) == -27
    assert one("ffe5ff", m(17, "signed", width=2)) == Unfit(
        m(17, "signed", width=2), "wrong_length", "ffe5ff"
    )


def test_ascii_with_non_printable_bytes_is_lossless_and_visible() -> None:
    dtc = m(281, "ascii")
    assert one(b"P0299,P0101".hex(), dtc) == "P0299,P0101"  # issue 17: the DTC list
    assert one(b"WVWZZZ1JZXW000001\x00\x00\x00".hex(), m(256, "ascii")) == "WVWZZZ1JZXW000001"
    assert one(b"A\x01B\x7f\xff\\C\n".hex(), dtc) == "A\\x01B\\x7f\\xff\\\\C\\x0a"
    assert one(b"\x00A".hex(), dtc) == "\\x00A"  # only trailing NUL padding is dropped
    # An integer element read as text: its bytes, `width` of them.
    assert one(0x4142000000000000, m(11, "ascii", width=8)) == "AB"
    assert one(0x41, m(11, "ascii")) == "A"


def test_hex_of_an_integer_is_its_bytes() -> None:
    assert one(0xABC, m(78, "hex")) == "0abc"
    assert one(0xABC, m(78, "hex", width=4)) == "00000abc"
    assert one(-1, m(78, "hex", width=2)) == "ffff"
    assert isinstance(one(-1, m(78, "hex")), Unfit)


def test_ascii_text_never_collides() -> None:
    assert ascii_text(b"\\x41") == "\\\\x41"
    assert ascii_text(b"A") == "A"


# --- rows: validation, legacy, table -------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"type": "float32"}, "unknown type"),
        ({"type": "signed"}, "needs the element's width"),
        ({"type": "unsigned", "width": 3}, "width must be 1, 2, 4 or 8"),
        ({"type": "boolean", "multiplier": 2}, "needs type unsigned or signed"),
        ({"type": "hex", "decimals": 2}, "needs type unsigned or signed"),
        ({"type": "enum"}, "enum needs labels"),
        ({"type": "unsigned", "labels": {"0": "a"}}, "labels need type enum"),
        ({"type": "enum", "labels": {"x": "a"}}, "not a value"),
        ({"type": "unsigned", "multiplier": 0}, "multiplier 0"),
        ({"type": "unsigned", "multiplier": "abc"}, "must be a number"),
        ({"type": "unsigned", "decimals": 13}, "decimals must be"),
        ({"type": "unsigned", "io_id": 70000}, "io_id"),
        ({"type": "unsigned", "name": ""}, "name is empty"),
    ],
)
def test_invalid_rows_are_reported_with_the_row_and_skipped(
    row: dict[str, Any], message: str
) -> None:
    good = {"id": 1, "model": "*", "io_id": 239, "name": "ignition", "type": "boolean"}
    bad = {"id": 7, "model": "*", "io_id": 66, "name": "voltage", **row}
    table, errors = load_mappings([good, bad])
    assert [e.row_id for e in errors] == ["7"]
    assert errors[0].collection == "io_mappings"
    assert message in errors[0].message
    assert [r.name for r in table.rows] == ["ignition"]  # the others keep working


def test_duplicates_within_a_model_keep_the_lower_id() -> None:
    table, errors = load_mappings(
        [
            {"id": 2, "model": "*", "io_id": 239, "name": "ign", "type": "boolean"},
            {"id": 1, "model": "*", "io_id": 239, "name": "ignition", "type": "boolean"},
            {"id": 3, "model": "*", "io_id": 240, "name": "ignition", "type": "boolean"},
        ]
    )
    assert [r.row_id for r in table.rows] == [1]
    assert sorted(e.row_id for e in errors) == ["2", "3"]


def test_the_first_vocabulary_keeps_working() -> None:
    """Rows written before ADR 0013 (the Studio offered unsigned/signed/boolean/hex/ascii;
    the processor knew int/float/bool/string/hex; multiplier NOT NULL DEFAULT 1)."""
    table, errors = load_mappings(
        [
            {
                "id": 1,
                "io_id": 239,
                "name": "ignition",
                "type": "bool",
                "multiplier": Decimal("1.000000000"),
            },
            {
                "id": 2,
                "io_id": 66,
                "name": "volts",
                "type": "float",
                "multiplier": Decimal("0.001000000"),
            },
            {"id": 3, "io_id": 16, "name": "odometer", "type": "int", "multiplier": Decimal(1)},
            {"id": 4, "io_id": 281, "name": "dtc", "type": "string", "multiplier": 1},
            {"id": 5, "io_id": 78, "name": "ibutton", "type": "unsigned", "multiplier": 1},
            {"id": 6, "io_id": 239 + 1, "name": "movement", "type": "boolean", "multiplier": 1},
        ]
    )
    assert errors == []
    attrs = decode_attributes(
        {
            "239": 1,
            "66": 12845,
            "16": 2**40,
            "281": b"P0299".hex(),
            "78": 72069690697717651,
            "240": 0,
        },
        table.for_model("FMB920"),
    )
    assert attrs == {
        "ignition": True,
        "volts": Decimal("12.845"),
        "odometer": 2**40,
        "dtc": "P0299",
        "ibutton": 72069690697717651,
        "movement": False,
    }
    assert type(attrs["ignition"]) is bool
    assert type(attrs["ibutton"]) is int


def test_model_rows_override_wildcard_rows() -> None:
    table, _ = load_mappings(
        [
            {"id": 1, "model": "*", "io_id": 239, "name": "ignition", "type": "boolean"},
            {
                "id": 2,
                "model": "*",
                "io_id": 66,
                "name": "external_voltage",
                "type": "unsigned",
                "multiplier": "0.001",
            },
            {
                "id": 3,
                "model": "FMB920",
                "io_id": 66,
                "name": "supply_voltage",
                "type": "unsigned",
                "multiplier": "0.001",
            },
            # The model maps another io id to a wildcard row's name: the model's wins.
            {"id": 4, "model": "FMB920", "io_id": 9, "name": "ignition", "type": "boolean"},
        ]
    )
    io = {"66": 12845, "239": 1, "9": 0, "999": 5}
    assert decode_attributes(io, table.for_model("FMB920")) == {
        "supply_voltage": Decimal("12.845"),
        "ignition": False,
    }
    assert decode_attributes(io, table.for_model("FMC130")) == {
        "external_voltage": Decimal("12.845"),
        "ignition": True,
    }
    assert decode_attributes(io, table.for_model(None)) == decode_attributes(
        io, table.for_model("FMC130")
    )


def test_unfit_values_are_collected_not_dropped_silently() -> None:
    table, _ = load_mappings(
        [
            {"id": 1, "io_id": 17, "name": "axis_x", "type": "signed", "width": 2},
            {"id": 2, "io_id": 239, "name": "ignition", "type": "boolean"},
        ]
    )
    unfit: list[Unfit] = []
    attrs = decode_attributes({"17": 70000, "239": 1}, table.for_model(None), unfit)
    assert attrs == {"ignition": True}
    assert [(u.mapping.row_id, u.reason, u.raw) for u in unfit] == [(1, "out_of_range", 70000)]


def test_versions_change_with_any_row_per_model_and_not_with_order() -> None:
    rows = [
        {"id": 1, "model": "*", "io_id": 239, "name": "ignition", "type": "boolean"},
        {"id": 2, "model": "FMB920", "io_id": 17, "name": "axis_x", "type": "signed", "width": 2},
        {"id": 3, "model": "FMC130", "io_id": 17, "name": "axis_x", "type": "signed", "width": 2},
    ]
    a, _ = load_mappings(rows)
    b, _ = load_mappings(list(reversed(rows)))
    assert a.version == b.version
    assert a.resolve("FMB920").version == b.resolve("FMB920").version
    changed, _ = load_mappings([*rows[:2], {**rows[2], "width": 4}])
    assert changed.resolve("FMC130").version != a.resolve("FMC130").version
    assert changed.resolve("FMB920").version == a.resolve("FMB920").version  # not its rows
    assert MappingTable([]).resolve("FMB920").version == ""
    assert not MappingTable([]).resolve("FMB920")


def test_same_value_compares_as_jsonb_does() -> None:
    assert same_value({"a": 2}, {"a": Decimal("2.00")})
    assert same_value({"a": Decimal("12.80")}, {"a": Decimal("12.8")})
    assert not same_value({"a": True}, {"a": 1})  # issue 17: boolean → 1.0 was wrong
    assert not same_value({"a": Decimal("1.0")}, {"a": True})
    assert not same_value({"a": 1}, {"a": 1, "b": 2})
    assert not same_value({"a": "1"}, {"a": 1})

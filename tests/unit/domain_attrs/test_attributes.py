"""IO attribute decoding: model over wildcard, types, scaling, versioning."""

from __future__ import annotations

from processor.domain.attributes import IoMapping, MappingTable, decode_attributes

ROWS = [
    IoMapping("*", 239, "ignition", "bool"),
    IoMapping("*", 66, "external_voltage_v", "float", 0.001, "V"),
    IoMapping("*", 16, "odometer_m", "int"),
    IoMapping("FMB920", 66, "supply_voltage_v", "float", 0.001, "V"),
    IoMapping("*", 11, "iccid", "string"),
    IoMapping("*", 385, "beacon", "hex"),
]


def test_model_rows_override_wildcard_rows() -> None:
    table = MappingTable(ROWS)
    attrs = decode_attributes({"66": 12845, "239": 1, "999": 5}, table.for_model("FMB920"))
    assert attrs == {"supply_voltage_v": 12.845, "ignition": True}
    generic = decode_attributes({"66": 12845}, table.for_model("FMC130"))
    assert generic == {"external_voltage_v": 12.845}


def test_big_integers_and_byte_strings() -> None:
    table = MappingTable(ROWS)
    attrs = decode_attributes(
        {"11": 8944100000000000000, "385": "01020304", "16": 2**40}, table.for_model(None)
    )
    assert attrs == {"iccid": "8944100000000000000", "beacon": "01020304", "odometer_m": 2**40}


def test_values_that_do_not_fit_their_type_are_left_out() -> None:
    table = MappingTable(
        [IoMapping("*", 1, "count", "int", 0.5), IoMapping("*", 2, "flag", "bool")]
    )
    assert decode_attributes({"1": 3, "2": "ff"}, table.for_model(None)) == {}
    assert decode_attributes({"1": 4}, table.for_model(None)) == {"count": 2}


def test_version_changes_with_any_row_and_not_with_order() -> None:
    a = MappingTable(ROWS).version
    assert MappingTable(list(reversed(ROWS))).version == a
    changed = [*ROWS[:-1], IoMapping("*", 385, "beacon", "string")]
    assert MappingTable(changed).version != a

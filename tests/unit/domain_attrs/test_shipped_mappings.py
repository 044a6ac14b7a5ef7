"""The shipped Teltonika mappings load without a single skipped row and decode a
real-shaped record of each model as Teltonika's IO tables describe it."""

from __future__ import annotations

from decimal import Decimal

import pytest

from processor.domain.attributes import (
    AttributeValue,
    MappingError,
    Unfit,
    decode_attributes,
    load_mappings,
)
from processor.domain.shipped_mappings import (
    parse_catalogue,
    shipped_mapping,
    shipped_models,
    shipped_rows,
)


@pytest.mark.parametrize("model", shipped_models())
def test_every_shipped_model_loads_cleanly(model: str) -> None:
    rows = shipped_rows(model)
    table, errors = load_mappings([{**r, "id": n} for n, r in enumerate(rows)])
    assert errors == []
    assert len(table.rows) == len(rows)
    assert all(r["model"] == model for r in rows)


def test_the_models_of_the_issue_are_shipped() -> None:
    assert {"FMB920", "FMC130", "FMC003"} <= set(shipped_models())


def _decode(model: str, io: dict[str, int | str]) -> tuple[dict[str, AttributeValue], list[Unfit]]:
    table, _ = load_mappings(shipped_rows(model))
    unfit: list[Unfit] = []
    return decode_attributes(io, table.for_model(model), unfit), unfit


def test_an_fmb920_record() -> None:
    attrs, unfit = _decode(
        "FMB920",
        {
            "239": 1,
            "240": 0,
            "66": 12845,  # mV
            "67": 4100,
            "16": 123456789,
            "21": 4,
            "69": 1,
            "181": 12,
            "182": 8,
            "17": 65509,  # 0xFFE5: −27 mG
            "18": 12,
            "19": 64536,  # −1000 mG
            "72": 4294967046,  # 0xFFFFFF06: −25.0 °C
            "73": 215,
            "78": 72069690697717651,  # the iButton of issue 17, 8 bytes
            "80": 1,
            "11": 8944100000000000000,
            "9999": 5,
        },
    )
    assert unfit == []
    assert attrs == {
        "ignition": True,
        "movement": False,
        "external_voltage": Decimal("12.845"),
        "battery_voltage": Decimal("4.1"),
        "total_odometer": 123456789,
        "gsm_signal": 4,
        "gnss_status": "GNSS on with fix",
        "gnss_pdop": Decimal("1.2"),
        "gnss_hdop": Decimal("0.8"),
        "axis_x": -27,
        "axis_y": 12,
        "axis_z": -1000,
        "dallas_temperature_1": Decimal("-25"),
        "dallas_temperature_2": Decimal("21.5"),
        "ibutton": "01000b00791c1793",
        "data_mode": "home on moving",
        "iccid1": 8944100000000000000,
    }


def test_an_fmc130_record_with_can_data() -> None:
    attrs, unfit = _decode(
        "FMC130",
        {"83": 150505, "84": 421, "85": 3150, "87": 98765432, "115": 65531, "89": 47, "9": 4321},
    )
    assert unfit == []
    assert attrs == {
        "can_fuel_consumed": Decimal("15050.5"),
        "can_fuel_level": Decimal("42.1"),
        "can_engine_rpm": 3150,
        "can_total_mileage": 98765432,
        "can_engine_temperature": Decimal("-0.5"),
        "can_fuel_level_percent": 47,
        "analog_input_1": Decimal("4.321"),
    }


def test_an_fmc003_record_with_obd_data() -> None:
    attrs, unfit = _decode(
        "FMC003",
        {
            "256": b"WVWZZZ1JZXW000001".hex(),  # VIN, an NX element
            "281": b"P0299,P0101".hex(),  # fault codes
            "30": 2,
            "32": 0xF6,  # coolant −10 °C
            "36": 2500,
            "51": 14150,
        },
    )
    assert unfit == []
    assert attrs == {
        "vin": "WVWZZZ1JZXW000001",
        "obd_fault_codes": "P0299,P0101",
        "obd_dtc_count": 2,
        "obd_coolant_temperature": -10,
        "obd_engine_rpm": 2500,
        "obd_control_module_voltage": Decimal("14.15"),
    }


def test_a_shipped_width_is_found_for_an_io_id() -> None:
    axis = shipped_mapping(None, 17)
    assert axis is not None
    assert (axis.type, axis.width) == ("signed", 2)
    assert shipped_mapping("FMB920", 65000) is None


def test_a_broken_catalogue_is_refused() -> None:
    with pytest.raises(MappingError, match="no group"):
        parse_catalogue('[models]\nX = ["nope"]\n')
    with pytest.raises(MappingError, match="needs the element's width"):
        parse_catalogue(
            '[models]\nX = ["g"]\n[[groups.g]]\nio_id = 1\nname = "a"\ntype = "signed"\n'
        )
    with pytest.raises(MappingError, match="colour"):
        parse_catalogue(
            '[models]\nX = ["g"]\n[[groups.g]]\nio_id = 1\nname = "a"\ntype = "hex"\ncolour = 1\n'
        )

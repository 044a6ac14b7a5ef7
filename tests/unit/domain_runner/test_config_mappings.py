"""The live stage's configuration reads io_mappings rows as whole JSON objects (old and
new snapshots alike), exactly, and reports invalid rows with their id."""

from __future__ import annotations

from decimal import Decimal

from processor.domain_runner.config_source import build_snapshot


def _rows(*mappings: str) -> dict[str, list[dict[str, object]]]:
    return {
        "events": [],
        "stages": [],
        "geofences": [],
        "entries": [],
        "devices": [{"imei": "D1", "model": "FMB920"}],
        "io_mappings": [{"m": m} for m in mappings],
    }


def test_rows_of_either_snapshot_are_read_exactly_and_bad_ones_reported() -> None:
    snapshot = build_snapshot(
        _rows(
            # The snapshot before ADR 0013: no width column, multiplier NOT NULL DEFAULT 1.
            '{"id": 1, "model": "*", "io_id": 78, "name": "ibutton", "type": "unsigned",'
            ' "multiplier": 1.000000000, "unit": null}',
            '{"id": 2, "model": "FMB920", "io_id": 66, "name": "volts", "type": "float",'
            ' "multiplier": 0.001000000, "unit": "V"}',
            # ADR 0013's fields.
            '{"id": 3, "model": "FMB920", "io_id": 17, "name": "axis_x", "type": "signed",'
            ' "multiplier": null, "unit": "mG", "width": 2, "offset_value": null,'
            ' "decimals": null, "labels": null}',
            '{"id": 4, "model": "FMB920", "io_id": 18, "name": "axis_y", "type": "signed",'
            ' "multiplier": null, "unit": "mG", "width": null, "offset_value": null,'
            ' "decimals": null, "labels": null}',
        )
    )
    assert [str(e) for e in snapshot.errors] == [
        "io_mappings row 4: signed needs the element's width (1, 2, 4 or 8 bytes)"
    ]
    mappings = snapshot.mappings.resolve(snapshot.models["D1"])
    assert sorted(mappings.by_io) == ["17", "66", "78"]
    assert mappings.by_io["66"].multiplier == Decimal("0.001")
    assert mappings.by_io["78"].multiplier is None

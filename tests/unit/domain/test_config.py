"""Configuration rows: typed, immutable, validated per kind; bad rows skipped and named."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from processor.domain.config import (
    ConfigError,
    DomainConfig,
    Geofence,
    LineGeometry,
    PointGeometry,
    PolygonGeometry,
    RowError,
    config_from_event_file,
    load_rows,
)
from processor.tools.simulator.event import default_event_path, load_event

EVENT = {"id": 1, "name": "Rally", "starts_at": "2026-05-01T05:00:00Z", "ends_at": 1777640400000}
STAGE = {"id": 10, "event": 1, "name": "SS1", "sequence": 1}
LINE = {"type": "LineString", "coordinates": [[25.0, 54.6], [25.0001, 54.6001]]}
POINT = {"type": "Point", "coordinates": [25.0, 54.6]}
SQUARE = [[25.0, 54.6], [25.001, 54.6], [25.001, 54.601], [25.0, 54.601], [25.0, 54.6]]
POLYGON = {"type": "Polygon", "coordinates": [SQUARE]}


def fence(fence_id: int = 100, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": fence_id,
        "event": 1,
        "stage": 10,
        "kind": "start_line",
        "name": f"fence {fence_id}",
        "geometry": LINE,
        "sequence": 1,
        "direction": "forward",
    }
    row.update(fields)
    return row


def load(*fences: dict[str, Any]) -> tuple[DomainConfig, list[RowError]]:
    return load_rows(events=[EVENT], stages=[STAGE], geofences=fences)


def only_error(*fences: dict[str, Any]) -> str:
    config, errors = load(*fences)
    assert config.geofences == ()
    assert len(errors) == 1
    return str(errors[0])


def test_sample_event_loads_from_the_simulator_object_and_from_raw_json() -> None:
    from_object, errors = config_from_event_file(load_event())
    assert errors == []
    from_bytes, errors = config_from_event_file(default_event_path().read_bytes())
    assert errors == []
    assert from_object == from_bytes
    assert len(from_object.events) == 1
    assert [s.id for s in from_object.stages] == [1, 2, 3]
    assert len(from_object.geofences) == 21
    kinds = {g.kind: type(g.geometry) for g in from_object.geofences}
    assert kinds == {
        "start_line": LineGeometry,
        "split_line": LineGeometry,
        "finish_line": LineGeometry,
        "waypoint": PointGeometry,
        "speed_zone": PolygonGeometry,
        "zone": PolygonGeometry,
    }
    assert all(s.route is not None for s in from_object.stages)
    assert [g.id for g in from_object.geofences_of(3)] == [15, 16, 17, 18, 19, 20, 21]


def test_configuration_is_immutable() -> None:
    config, _ = load(fence())
    with pytest.raises(AttributeError):
        config.geofences[0].kind = "zone"  # type: ignore[misc]
    assert isinstance(config.geofences, tuple)
    assert isinstance(config.geofences[0].geometry.coordinates, tuple)  # type: ignore[union-attr]


def test_valid_rows_of_every_kind() -> None:
    config, errors = load(
        fence(1),
        fence(2, kind="waypoint", geometry=POINT, radius_m=Decimal("50.0"), direction=None),
        fence(3, kind="zone", geometry=POLYGON, direction=None),
        fence(4, kind="speed_zone", geometry=msgspec.json.encode(POLYGON), speed_limit_kmh=60),
        fence(5, kind="finish_line", geometry=msgspec.json.encode(LINE).decode(), stage=None),
    )
    assert errors == []
    by_id = {g.id: g for g in config.geofences}
    assert by_id[2].radius_m == 50.0
    assert isinstance(by_id[4].geometry, PolygonGeometry)
    assert by_id[5].stage is None


def test_rows_keep_id_order_and_times_accept_iso_datetime_and_ms() -> None:
    stages = [
        {**STAGE, "id": 12, "opens_at": datetime(2026, 5, 1, 6, tzinfo=UTC)},
        {**STAGE, "id": 11, "opens_at": "2026-05-01T06:00:00.000Z", "closes_at": 1777618920000},
    ]
    config, errors = load_rows(
        events=[EVENT], stages=stages, geofences=[fence(2, stage=11), fence(1, stage=12)]
    )
    assert errors == []
    assert [s.id for s in config.stages] == [11, 12]
    assert [g.id for g in config.geofences] == [1, 2]
    assert config.events[0].starts_at_ms == 1777611600000
    assert config.stages[0].opens_at_ms == config.stages[1].opens_at_ms == 1777615200000


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (fence(geometry=POINT), "a start_line needs a LineString geometry, got Point"),
        (
            fence(geometry={"type": "LineString", "coordinates": [[25.0, 54.6], [25.0, 54.6]]}),
            "at least 2 distinct positions",
        ),
        (
            fence(
                geometry={"type": "LineString", "coordinates": [[25.0, 54.6], [25.0, 54.6 + 1e-9]]}
            ),
            "m long (min 0.1)",
        ),
        (fence(direction=None), "needs direction forward, reverse or either"),
        (fence(direction="backwards"), "needs direction"),
        (fence(kind="waypoint", geometry=POINT), "a waypoint needs radius_m > 0"),
        (fence(kind="waypoint", geometry=POINT, radius_m=0), "a waypoint needs radius_m > 0"),
        (fence(kind="waypoint", geometry=LINE, radius_m=5), "a waypoint needs a Point"),
        (fence(kind="zone", geometry=LINE), "a zone needs a Polygon geometry, got LineString"),
        (
            fence(kind="zone", geometry={"type": "Polygon", "coordinates": [SQUARE[:-1]]}),
            "exterior ring must be closed",
        ),
        (
            fence(
                kind="zone",
                geometry={
                    "type": "Polygon",
                    "coordinates": [
                        [
                            [25.0, 54.6],
                            [25.001, 54.601],
                            [25.001, 54.6],
                            [25.0, 54.601],
                            [25.0, 54.6],
                        ]
                    ],
                },
            ),
            "polygon is not simple",
        ),
        (fence(kind="speed_zone", geometry=POLYGON), "a speed_zone needs speed_limit_kmh > 0"),
        (fence(kind="gate"), "unknown kind 'gate'"),
        (fence(geometry={"type": "MultiPolygon", "coordinates": []}), "unsupported geometry"),
        (fence(geometry="{not json"), "geometry is not valid JSON"),
        (fence(geometry={"type": "Point", "coordinates": [200.0, 54.0]}), "out of range"),
        (fence(geometry={"type": "Point", "coordinates": ["25", "54"]}), "must be numbers"),
        ({"id": 100, "event": 1, "kind": "zone"}, "missing required field `geometry`"),
        (fence(stage=99), "unknown stage 99"),
        (fence(event=2), "unknown event 2"),
    ],
)
def test_bad_rows_are_skipped_with_an_error_naming_the_row(
    row: dict[str, Any], message: str
) -> None:
    error = only_error(row)
    assert error.startswith("geofences row 100: ")
    assert message in error


def test_one_bad_row_does_not_stop_the_others() -> None:
    config, errors = load(fence(1), fence(2, geometry=POINT), fence(3), fence(1))
    assert [g.id for g in config.geofences] == [1, 3]
    assert [str(e) for e in errors] == [
        "geofences row 2: a start_line needs a LineString geometry, got Point",
        "geofences row 1: duplicate id",
    ]


def test_a_skipped_stage_takes_its_geofences_with_it() -> None:
    stages = [{**STAGE, "opens_at": "2026-05-01T07:00:00Z", "closes_at": "2026-05-01T06:00:00Z"}]
    config, errors = load_rows(events=[EVENT], stages=stages, geofences=[fence()])
    assert config.stages == ()
    assert config.geofences == ()
    assert [str(e) for e in errors] == [
        "stages row 10: opens_at must be before closes_at",
        "geofences row 100: unknown stage 10",
    ]


def test_bad_event_and_stage_rows() -> None:
    events: list[dict[str, Any]] = [{"id": "x"}, {**EVENT, "id": 2, "starts_at": "no"}, EVENT]
    stages = [
        {**STAGE, "id": 11, "opens_at": datetime(2026, 5, 1, 6)},  # naive: ambiguous
        {**STAGE, "id": 12, "route": POINT},
        {**STAGE, "id": 13, "event": 7},
        {**STAGE, "id": 14, "route": LINE, "max_time_s": 600},
    ]
    config, errors = load_rows(events=events, stages=stages)
    assert [e.id for e in config.events] == [1]
    assert [s.id for s in config.stages] == [14]
    text = [str(e) for e in errors]
    assert text[0].startswith("events row x: Expected `int`")
    assert text[1] == "events row 2: starts_at: not an ISO-8601 time"
    assert text[2] == "stages row 11: opens_at: a time needs a UTC offset"
    assert text[3] == "stages row 12: route must be a LineString"
    assert text[4] == "stages row 13: unknown event 7"


def test_event_file_must_be_an_object_of_row_lists() -> None:
    with pytest.raises(ConfigError, match="expected a JSON object"):
        config_from_event_file(b"[1, 2]")
    with pytest.raises(ConfigError, match="geofences must be a list"):
        config_from_event_file({"events": [], "geofences": {"id": 1}})
    with pytest.raises(ConfigError, match="event file"):
        config_from_event_file(b"{oops")


def test_gate_property() -> None:
    config, _ = load(fence(1), fence(2, kind="waypoint", geometry=POINT, radius_m=5))
    gates = [g.is_gate for g in config.geofences]
    assert gates == [True, False]
    assert isinstance(config.geofence(2), Geofence)

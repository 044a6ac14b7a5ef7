"""The sample event file: Directus collection rows (events, stages, geofences, devices,
entries) in one JSON document, so domain code can load the same data as rows.

Field names follow the collections table in DESIGN.md. Stages carry one extra field,
`route` (a GeoJSON LineString the cars drive); the simulator needs it and the domain
can use it for off-route checks. Unknown fields are ignored, so extra Directus
columns do not break loading.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Literal

import msgspec

from processor.core.timeparse import TimeError, parse_time_ms

FORMAT = "processor-sample-event/1"
Kind = Literal["start_line", "split_line", "finish_line", "waypoint", "speed_zone", "zone"]
Direction = Literal["forward", "reverse", "either"]
GATE_KINDS: frozenset[str] = frozenset({"start_line", "split_line", "finish_line"})
ZONE_KINDS: frozenset[str] = frozenset({"speed_zone", "zone"})
LonLat = tuple[float, float]


class LineString(msgspec.Struct, frozen=True, tag="LineString", tag_field="type"):
    coordinates: list[LonLat]


class Point(msgspec.Struct, frozen=True, tag="Point", tag_field="type"):
    coordinates: LonLat


class Polygon(msgspec.Struct, frozen=True, tag="Polygon", tag_field="type"):
    coordinates: list[list[LonLat]]


Geometry = LineString | Point | Polygon


class EventRow(msgspec.Struct, frozen=True):
    id: int
    name: str
    starts_at: str
    ends_at: str
    timezone: str
    status: str
    rules: dict[str, object] | None = None


class StageRow(msgspec.Struct, frozen=True):
    id: int
    event: int
    name: str
    sequence: int
    opens_at: str
    closes_at: str
    status: str
    max_time_s: int
    route: LineString

    @property
    def opens_at_ms(self) -> int:
        return parse_time_ms(self.opens_at)

    @property
    def closes_at_ms(self) -> int:
        return parse_time_ms(self.closes_at)


class GeofenceRow(msgspec.Struct, frozen=True):
    id: int
    event: int
    stage: int | None
    kind: Kind
    name: str
    geometry: Geometry
    sequence: int
    direction: Direction | None = None
    radius_m: float | None = None
    speed_limit_kmh: float | None = None
    waypoint_type: str | None = None


class DeviceRow(msgspec.Struct, frozen=True):
    id: int
    imei: str
    model: str
    label: str


class EntryRow(msgspec.Struct, frozen=True):
    id: int
    event: int
    device: int
    number: int
    crew_name: str
    class_: str = msgspec.field(name="class")
    status: str = "confirmed"


class SampleEvent(msgspec.Struct, frozen=True):
    """The whole file; `events` holds exactly one row."""

    format: str
    events: list[EventRow]
    stages: list[StageRow]
    geofences: list[GeofenceRow]
    devices: list[DeviceRow]
    entries: list[EntryRow]
    description: str = ""
    conventions: dict[str, str] = msgspec.field(default_factory=dict)

    @property
    def event(self) -> EventRow:
        return self.events[0]

    def stages_in_order(self) -> list[StageRow]:
        return sorted(self.stages, key=lambda s: s.sequence)

    def geofences_of(self, stage_id: int) -> list[GeofenceRow]:
        return sorted((g for g in self.geofences if g.stage == stage_id), key=lambda g: g.sequence)

    def entries_in_start_order(self) -> list[EntryRow]:
        return sorted(self.entries, key=lambda e: e.number)

    def device(self, device_id: int) -> DeviceRow:
        return next(d for d in self.devices if d.id == device_id)


class EventError(ValueError):
    """The event file is not a consistent sample event."""


def default_event_path() -> Path:
    """The sample event shipped as package data (the single source of truth)."""
    return Path(str(resources.files(__package__ or __name__).joinpath("data/sample-event.json")))


def load_event(path: Path | str | None = None) -> SampleEvent:
    """Read and validate an event file (default: the shipped sample)."""
    raw = Path(path or default_event_path()).read_bytes()
    return parse_event(raw)


def parse_event(raw: bytes) -> SampleEvent:
    try:
        doc = msgspec.json.decode(raw, type=SampleEvent)
    except msgspec.ValidationError as exc:
        raise EventError(f"event file: {exc}") from None
    validate(doc)
    return doc


def validate(doc: SampleEvent) -> None:
    """Cross-row checks msgspec types can't express; raises EventError on the first fault."""
    if doc.format != FORMAT:
        raise EventError(f"format is {doc.format!r}, expected {FORMAT!r}")
    if len(doc.events) != 1:
        raise EventError("exactly one event row is expected")
    event = doc.event
    for name, rows in (
        ("stages", doc.stages),
        ("geofences", doc.geofences),
        ("devices", doc.devices),
        ("entries", doc.entries),
    ):
        _unique(name, [r.id for r in rows])
    _unique("device imei", [d.imei for d in doc.devices])
    _unique("entry number", [e.number for e in doc.entries])
    _unique("entry device", [e.device for e in doc.entries])
    _unique("stage sequence", [s.sequence for s in doc.stages])
    _check_times("event", event.starts_at, event.ends_at)
    for stage in doc.stages:
        _check_stage(stage, event.id)
    stage_ids = {s.id for s in doc.stages}
    for fence in doc.geofences:
        _check_geofence(fence, event.id, stage_ids)
    device_ids = {d.id for d in doc.devices}
    for entry in doc.entries:
        if entry.event != event.id or entry.device not in device_ids:
            raise EventError(f"entry {entry.id}: unknown event or device")
    for device in doc.devices:
        if not (device.imei.isdigit() and len(device.imei) == 15):
            raise EventError(f"device {device.id}: imei must be 15 digits")


def _unique(name: str, values: Sequence[object]) -> None:
    if len(set(values)) != len(values):
        raise EventError(f"duplicate {name}")


def _check_times(name: str, start: str, end: str) -> None:
    try:
        ok = parse_time_ms(start) < parse_time_ms(end)
    except TimeError as exc:
        raise EventError(f"{name}: {exc}") from None
    if not ok:
        raise EventError(f"{name}: must start before it ends")


def _check_stage(stage: StageRow, event_id: int) -> None:
    if stage.event != event_id:
        raise EventError(f"stage {stage.id}: unknown event {stage.event}")
    _check_times(f"stage {stage.id}", stage.opens_at, stage.closes_at)
    if len(stage.route.coordinates) < 2 or stage.max_time_s <= 0:
        raise EventError(f"stage {stage.id}: needs a route and a positive max_time_s")


def _check_geofence(fence: GeofenceRow, event_id: int, stage_ids: set[int]) -> None:
    where = f"geofence {fence.id}"
    if fence.event != event_id or (fence.stage is not None and fence.stage not in stage_ids):
        raise EventError(f"{where}: unknown event or stage")
    geometry = fence.geometry
    if fence.kind in GATE_KINDS:
        if not isinstance(geometry, LineString) or len(geometry.coordinates) < 2:
            raise EventError(f"{where}: a {fence.kind} is a LineString")
        if fence.direction is None:
            raise EventError(f"{where}: a gate needs a direction")
    elif fence.kind == "waypoint":
        if not isinstance(geometry, Point) or not (fence.radius_m and fence.radius_m > 0):
            raise EventError(f"{where}: a waypoint is a Point with radius_m > 0")
    else:
        if not isinstance(geometry, Polygon) or not geometry.coordinates:
            raise EventError(f"{where}: a {fence.kind} is a Polygon")
        ring = geometry.coordinates[0]
        if len(ring) < 4 or ring[0] != ring[-1]:
            raise EventError(f"{where}: polygon ring must be closed with ≥ 4 positions")
        if fence.kind == "speed_zone" and not (fence.speed_limit_kmh and fence.speed_limit_kmh > 0):
            raise EventError(f"{where}: a speed_zone needs speed_limit_kmh > 0")

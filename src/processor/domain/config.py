"""Typed, immutable domain configuration built from Directus rows.

Rows come from SQL (asyncpg records), from the Directus API or from the sample event
file; they are validated one by one. A bad row is skipped and reported as a
`RowError` naming the collection and the row id, never raised: one mistyped
geofence in Directus must not stop timing for every other gate of the event.

Rules enforced per geofence kind (DESIGN, collections table):

- gates (`start_line`, `split_line`, `finish_line`): a GeoJSON LineString with at
  least two distinct positions, at least `MIN_GATE_LENGTH_M` long, and a direction;
- `waypoint`: a Point with `radius_m` > 0;
- `zone`, `speed_zone`: a Polygon whose rings are closed (≥ 4 positions, first =
  last), simple and of non-zero area; a speed zone also needs `speed_limit_kmh` > 0.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, Literal, TypeVar, cast, get_args

import msgspec

from processor.core.timeparse import TimeError, datetime_ms, parse_time_ms
from processor.domain.projection import LocalProjection
from processor.domain.rules import DEFAULT_RULES, EventRules, RulesError, parse_rules
from processor.domain.shapes import polygon_problem

GeofenceKind = Literal["start_line", "split_line", "finish_line", "waypoint", "speed_zone", "zone"]
Direction = Literal["forward", "reverse", "either"]
Collection = Literal["events", "stages", "geofences", "io_mappings"]
LonLat = tuple[float, float]

GATE_KINDS: frozenset[str] = frozenset({"start_line", "split_line", "finish_line"})
ZONE_KINDS: frozenset[str] = frozenset({"speed_zone", "zone"})
KINDS: frozenset[str] = frozenset(get_args(GeofenceKind))
DIRECTIONS: frozenset[str] = frozenset(get_args(Direction))
# A gate shorter than this is a drawing mistake (a double click), not a timing line.
MIN_GATE_LENGTH_M = 0.1
# Smallest polygon area taken seriously (m²); below it a zone is degenerate.
MIN_ZONE_AREA_M2 = 1.0


class LineGeometry(msgspec.Struct, frozen=True):
    """A GeoJSON LineString; consecutive duplicate positions removed."""

    coordinates: tuple[LonLat, ...]


class PointGeometry(msgspec.Struct, frozen=True):
    coordinates: LonLat


class PolygonGeometry(msgspec.Struct, frozen=True):
    """A GeoJSON Polygon: exterior ring first, then holes; every ring closed."""

    rings: tuple[tuple[LonLat, ...], ...]


Geometry = LineGeometry | PointGeometry | PolygonGeometry


class Event(msgspec.Struct, frozen=True):
    id: int
    name: str
    starts_at_ms: int | None = None
    ends_at_ms: int | None = None
    timezone: str | None = None
    status: str | None = None
    rules: EventRules = DEFAULT_RULES


class Stage(msgspec.Struct, frozen=True):
    id: int
    event: int
    name: str
    sequence: int
    opens_at_ms: int | None = None
    closes_at_ms: int | None = None
    status: str | None = None
    max_time_s: int | None = None
    route: LineGeometry | None = None


class Geofence(msgspec.Struct, frozen=True):
    id: int
    event: int
    stage: int | None
    kind: GeofenceKind
    name: str
    geometry: Geometry
    sequence: int
    direction: Direction | None = None
    radius_m: float | None = None
    speed_limit_kmh: float | None = None
    waypoint_type: str | None = None

    @property
    def is_gate(self) -> bool:
        return self.kind in GATE_KINDS


class DomainConfig(msgspec.Struct, frozen=True):
    events: tuple[Event, ...] = ()
    stages: tuple[Stage, ...] = ()
    geofences: tuple[Geofence, ...] = ()

    def geofence(self, geofence_id: int) -> Geofence:
        for fence in self.geofences:
            if fence.id == geofence_id:
                return fence
        raise KeyError(geofence_id)

    def event(self, event_id: int) -> Event | None:
        for event in self.events:
            if event.id == event_id:
                return event
        return None

    def stage(self, stage_id: int) -> Stage | None:
        for stage in self.stages:
            if stage.id == stage_id:
                return stage
        return None

    def geofences_of(self, stage_id: int) -> tuple[Geofence, ...]:
        return tuple(sorted((g for g in self.geofences if g.stage == stage_id), key=_by_seq))

    def all_coordinates(self) -> list[LonLat]:
        """Every position of every geofence and stage route (to centre a projection)."""
        points: list[LonLat] = []
        for stage in self.stages:
            if stage.route is not None:
                points.extend(stage.route.coordinates)
        for fence in self.geofences:
            points.extend(geometry_coordinates(fence.geometry))
        return points


class RowError(msgspec.Struct, frozen=True):
    """A row that was skipped, and why."""

    collection: Collection
    row_id: str
    message: str

    def __str__(self) -> str:
        return f"{self.collection} row {self.row_id}: {self.message}"


class ConfigError(ValueError):
    """A row or document that cannot become configuration."""


def geometry_coordinates(geometry: Geometry) -> list[LonLat]:
    if isinstance(geometry, PointGeometry):
        return [geometry.coordinates]
    if isinstance(geometry, LineGeometry):
        return list(geometry.coordinates)
    return [p for ring in geometry.rings for p in ring]


def load_rows(
    *,
    events: Iterable[Mapping[str, Any]] = (),
    stages: Iterable[Mapping[str, Any]] = (),
    geofences: Iterable[Mapping[str, Any]] = (),
) -> tuple[DomainConfig, list[RowError]]:
    """Validate rows into a configuration; bad rows are skipped and reported.

    Rows are kept in id order so the configuration (and the projection centred on it)
    does not depend on the order a query returned them in. A stage whose event was
    skipped, or a geofence whose stage or event was, is skipped too.
    """
    errors: list[RowError] = []
    loaded_events = _load_all("events", events, lambda row: _event(row, errors), errors)
    event_ids = {e.id for e in loaded_events}
    loaded_stages = _load_all("stages", stages, _stage, errors)
    kept_stages: list[Stage] = []
    for stage in loaded_stages:
        if stage.event not in event_ids:
            errors.append(RowError("stages", str(stage.id), f"unknown event {stage.event}"))
        else:
            kept_stages.append(stage)
    stage_events = {s.id: s.event for s in kept_stages}
    kept_fences: list[Geofence] = []
    for fence in _load_all("geofences", geofences, _geofence, errors):
        problem = None
        if fence.event not in event_ids:
            problem = f"unknown event {fence.event}"
        elif fence.stage is not None and fence.stage not in stage_events:
            problem = f"unknown stage {fence.stage}"
        elif fence.stage is not None and stage_events[fence.stage] != fence.event:
            problem = f"stage {fence.stage} belongs to another event"
        if problem is None:
            kept_fences.append(fence)
        else:
            errors.append(RowError("geofences", str(fence.id), problem))
    config = DomainConfig(tuple(loaded_events), tuple(kept_stages), tuple(kept_fences))
    return config, errors


def config_from_event_file(doc: object) -> tuple[DomainConfig, list[RowError]]:
    """The configuration of a sample-event document (`processor-sample-event/1`).

    Accepts the raw JSON (bytes or str), its decoded mapping, or any msgspec object
    with the same structure (the simulator's `load_event()` result), so the domain
    reads exactly the rows the simulator drives on without importing it.
    """
    if isinstance(doc, bytes | str):
        try:
            doc = msgspec.json.decode(doc)
        except msgspec.DecodeError as exc:
            raise ConfigError(f"event file: {exc}") from None
    elif isinstance(doc, msgspec.Struct):
        doc = msgspec.to_builtins(doc)
    if not isinstance(doc, Mapping):
        raise ConfigError("event file: expected a JSON object")
    rows: dict[str, list[Mapping[str, Any]]] = {}
    for name in ("events", "stages", "geofences"):
        value = doc.get(name, [])
        if not isinstance(value, list) or not all(isinstance(r, Mapping) for r in value):
            raise ConfigError(f"event file: {name} must be a list of objects")
        rows[name] = value
    return load_rows(events=rows["events"], stages=rows["stages"], geofences=rows["geofences"])


# --- rows ---------------------------------------------------------------------------

_Item = TypeVar("_Item", Event, Stage, Geofence)
_Row = TypeVar("_Row", bound=msgspec.Struct)


class _EventRow(msgspec.Struct):
    id: int
    name: str = ""
    starts_at: Any = None
    ends_at: Any = None
    timezone: str | None = None
    status: str | None = None
    rules: Any = None


class _StageRow(msgspec.Struct):
    id: int
    event: int
    name: str = ""
    sequence: int = 0
    opens_at: Any = None
    closes_at: Any = None
    status: str | None = None
    max_time_s: int | None = None
    route: Any = None


class _GeofenceRow(msgspec.Struct):
    id: int
    event: int
    kind: str
    geometry: Any
    stage: int | None = None
    name: str = ""
    sequence: int = 0
    direction: str | None = None
    radius_m: float | None = None
    speed_limit_kmh: float | None = None
    waypoint_type: str | None = None


def _load_all(
    collection: Collection,
    rows: Iterable[Mapping[str, Any]],
    parse: Callable[[Mapping[str, Any]], _Item],
    errors: list[RowError],
) -> list[_Item]:
    found: dict[int, _Item] = {}
    for row in rows:
        row_id = _row_id(row)
        try:
            item = parse(row)
        except ConfigError as exc:
            errors.append(RowError(collection, row_id, str(exc)))
            continue
        if item.id in found:
            errors.append(RowError(collection, row_id, "duplicate id"))
            continue
        found[item.id] = item
    return [found[k] for k in sorted(found)]


def _row_id(row: Mapping[str, Any]) -> str:
    try:
        value = row.get("id")
    except Exception:
        return "?"
    return "?" if value is None else str(value)


def _convert(row: Mapping[str, Any], kind: type[_Row]) -> _Row:
    try:
        return msgspec.convert(dict(row), type=kind, strict=False)
    except (msgspec.ValidationError, TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None


def _event(row: Mapping[str, Any], errors: list[RowError]) -> Event:
    raw = _convert(row, _EventRow)
    starts, ends = _time(raw.starts_at, "starts_at"), _time(raw.ends_at, "ends_at")
    if starts is not None and ends is not None and starts >= ends:
        raise ConfigError("starts_at must be before ends_at")
    try:
        rules = parse_rules(raw.rules)
    except RulesError as exc:
        # Timing must go on: the event keeps the default rules, and the error is reported.
        errors.append(RowError("events", str(raw.id), f"{exc}; using the default rules"))
        rules = DEFAULT_RULES
    return Event(raw.id, raw.name, starts, ends, raw.timezone, raw.status, rules)


def _stage(row: Mapping[str, Any]) -> Stage:
    raw = _convert(row, _StageRow)
    opens, closes = _time(raw.opens_at, "opens_at"), _time(raw.closes_at, "closes_at")
    if opens is not None and closes is not None and opens >= closes:
        raise ConfigError("opens_at must be before closes_at")
    if raw.max_time_s is not None and raw.max_time_s <= 0:
        raise ConfigError("max_time_s must be positive")
    route = None
    if raw.route is not None:
        geometry = parse_geometry(raw.route)
        if not isinstance(geometry, LineGeometry):
            raise ConfigError("route must be a LineString")
        _check_line(geometry, "route")
        route = geometry
    return Stage(
        raw.id, raw.event, raw.name, raw.sequence, opens, closes, raw.status, raw.max_time_s, route
    )


def _geofence(row: Mapping[str, Any]) -> Geofence:
    raw = _convert(row, _GeofenceRow)
    kind = raw.kind
    if kind not in KINDS:
        raise ConfigError(f"unknown kind {kind!r} (expected one of {sorted(KINDS)})")
    geometry = parse_geometry(raw.geometry)
    direction = raw.direction
    radius, limit = raw.radius_m, raw.speed_limit_kmh
    if kind in GATE_KINDS:
        if not isinstance(geometry, LineGeometry):
            raise ConfigError(f"a {kind} needs a LineString geometry, got {_type_name(geometry)}")
        _check_line(geometry, kind)
        if direction not in DIRECTIONS:
            raise ConfigError(f"a {kind} needs direction forward, reverse or either")
    elif kind == "waypoint":
        if not isinstance(geometry, PointGeometry):
            raise ConfigError(f"a waypoint needs a Point geometry, got {_type_name(geometry)}")
        if radius is None or not (math.isfinite(radius) and radius > 0.0):
            raise ConfigError("a waypoint needs radius_m > 0")
    else:
        if not isinstance(geometry, PolygonGeometry):
            raise ConfigError(f"a {kind} needs a Polygon geometry, got {_type_name(geometry)}")
        _check_polygon(geometry, kind)
        if kind == "speed_zone" and (limit is None or not (math.isfinite(limit) and limit > 0.0)):
            raise ConfigError("a speed_zone needs speed_limit_kmh > 0")
    if direction is not None and direction not in DIRECTIONS:
        raise ConfigError(f"unknown direction {direction!r}")
    return Geofence(
        id=raw.id,
        event=raw.event,
        stage=raw.stage,
        kind=cast(GeofenceKind, kind),
        name=raw.name,
        geometry=geometry,
        sequence=raw.sequence,
        direction=cast(Direction | None, direction),
        radius_m=radius,
        speed_limit_kmh=limit,
        waypoint_type=raw.waypoint_type if kind == "waypoint" else None,
    )


def _time(value: object, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ConfigError(f"{name}: a time needs a UTC offset")
        return datetime_ms(value)
    try:
        return parse_time_ms(value)
    except TimeError as exc:
        raise ConfigError(f"{name}: {exc}") from None


# --- geometry -----------------------------------------------------------------------


def parse_geometry(value: object) -> Geometry:
    """A GeoJSON geometry (mapping, or JSON text as a json column may return it).

    Positions may carry an altitude (ignored); they must be finite, with longitude in
    [-180, 180] and latitude in [-90, 90].
    """
    if isinstance(value, bytes | str):
        try:
            value = msgspec.json.decode(value)
        except msgspec.DecodeError:
            raise ConfigError("geometry is not valid JSON") from None
    if not isinstance(value, Mapping):
        raise ConfigError("geometry must be a GeoJSON object")
    kind = value.get("type")
    coords = value.get("coordinates")
    if kind == "Point":
        return PointGeometry(_position(coords))
    if kind == "LineString":
        return LineGeometry(_dedup(_positions(coords)))
    if kind == "Polygon":
        if not isinstance(coords, list) or not coords:
            raise ConfigError("Polygon coordinates must be a non-empty list of rings")
        return PolygonGeometry(tuple(tuple(_positions(ring)) for ring in coords))
    raise ConfigError(f"unsupported geometry type {kind!r} (Point, LineString or Polygon)")


def _position(value: object) -> LonLat:
    if not isinstance(value, list | tuple) or len(value) < 2:
        raise ConfigError("a position is [longitude, latitude]")
    lon, lat = value[0], value[1]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (lon, lat)):
        raise ConfigError("position values must be numbers")
    lon, lat = float(lon), float(lat)
    if not (math.isfinite(lon) and math.isfinite(lat)) or abs(lon) > 180.0 or abs(lat) > 90.0:
        raise ConfigError(f"position out of range: [{lon}, {lat}]")
    return (lon, lat)


def _positions(value: object) -> list[LonLat]:
    if not isinstance(value, list | tuple):
        raise ConfigError("coordinates must be a list of positions")
    return [_position(p) for p in value]


def _dedup(points: list[LonLat]) -> tuple[LonLat, ...]:
    kept: list[LonLat] = []
    for p in points:
        if not kept or p != kept[-1]:
            kept.append(p)
    return tuple(kept)


def _type_name(geometry: Geometry) -> str:
    if isinstance(geometry, PointGeometry):
        return "Point"
    return "LineString" if isinstance(geometry, LineGeometry) else "Polygon"


def _local(points: Iterable[LonLat]) -> list[tuple[float, float]]:
    """Points in metres around the first one (validation only needs local lengths)."""
    pts = list(points)
    proj = LocalProjection(pts[0][1], pts[0][0])
    return [proj.to_xy(lon, lat) for lon, lat in pts]


def _check_line(line: LineGeometry, what: str) -> None:
    if len(line.coordinates) < 2:
        raise ConfigError(f"a {what} LineString needs at least 2 distinct positions")
    xy = _local(line.coordinates)
    length = sum(math.dist(a, b) for a, b in itertools.pairwise(xy))
    if length < MIN_GATE_LENGTH_M:
        raise ConfigError(f"a {what} LineString is {length:.3f} m long (min {MIN_GATE_LENGTH_M})")


def _check_polygon(polygon: PolygonGeometry, what: str) -> None:
    for i, ring in enumerate(polygon.rings):
        name = "exterior ring" if i == 0 else f"hole {i}"
        if len(ring) < 4 or ring[0] != ring[-1]:
            raise ConfigError(f"{what} {name} must be closed (≥ 4 positions, first = last)")
        if len(set(ring)) < 3:
            raise ConfigError(f"{what} {name} needs at least 3 distinct positions")
    problem = polygon_problem(_local_rings(polygon), MIN_ZONE_AREA_M2)
    if problem is not None:
        raise ConfigError(f"{what}: {problem}")


def _local_rings(polygon: PolygonGeometry) -> list[list[tuple[float, float]]]:
    origin = polygon.rings[0][0]
    proj = LocalProjection(origin[1], origin[0])
    return [[proj.to_xy(lon, lat) for lon, lat in ring] for ring in polygon.rings]


def _by_seq(fence: Geofence) -> tuple[int, int]:
    return (fence.sequence, fence.id)

"""The event projected to metres: stage routes, and where each geofence meets each route.

Computed once per stage and shared by every car: the arc length of each gate and
zone-boundary crossing, and the nearest-approach table of each waypoint. The car's
timing then only has to invert s → t on its own profile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from processor.tools.simulator.event import (
    GATE_KINDS,
    GeofenceRow,
    LineString,
    Point,
    Polygon,
    SampleEvent,
    StageRow,
)
from processor.tools.simulator.geo import (
    XY,
    Projection,
    cross,
    point_in_polygon,
    point_segment,
    segment_intersection,
)
from processor.tools.simulator.trajectory import CarModel, Profile, Route, SpeedLimit

_DEDUP_M = 1e-6


@dataclass(frozen=True, slots=True)
class GateHit:
    """The route crosses a gate line at arc length `s`; `forward` per the gate's drawing
    (first → last point) rotated 90° counter-clockwise."""

    fence: GeofenceRow
    s: float
    forward: bool


@dataclass(frozen=True, slots=True)
class ZoneHit:
    fence: GeofenceRow
    s: float
    entering: bool


@dataclass(slots=True)
class WaypointTable:
    """Nearest approach of the route to a waypoint, from any arc length onward."""

    fence: GeofenceRow
    centre: XY
    route: Route
    seg_best: list[tuple[float, float]] = field(default_factory=list)  # (distance, s), suffix min

    def closest_from(self, s_start: float) -> tuple[float, float]:
        """(distance m, arc length) of the closest route point at or after s_start."""
        route = self.route
        i = route.segment_at(s_start)
        x, y, _ = route.at(s_start)
        dist, f = point_segment(self.centre, (x, y), route.point(i + 1))
        best = (dist, s_start + f * (route.s[i + 1] - s_start))
        if i + 1 < len(self.seg_best):
            best = min(best, self.seg_best[i + 1])
        return best


@dataclass(slots=True)
class StageCourse:
    stage: StageRow
    route: Route
    gates: list[GateHit]
    zones: list[ZoneHit]
    waypoints: list[WaypointTable]
    fences: list[GeofenceRow]
    _profiles: dict[CarModel, Profile] = field(default_factory=dict)

    def speed_limits(self, car: CarModel) -> list[SpeedLimit]:
        limits = []
        open_at: dict[int, float] = {}
        for hit in self.zones:
            fence = hit.fence
            if fence.kind != "speed_zone" or fence.speed_limit_kmh is None:
                continue
            if hit.entering:
                open_at[fence.id] = hit.s
            elif fence.id in open_at:
                speed = fence.speed_limit_kmh / 3.6 * car.zone_factor
                limits.append(SpeedLimit(open_at.pop(fence.id), hit.s, speed))
        return limits

    def profile(self, car: CarModel) -> Profile:
        """The car's speed profile on this route (cached: cars share a few models)."""
        found = self._profiles.get(car)
        if found is None:
            found = Profile(self.route, car, self.speed_limits(car))
            self._profiles[car] = found
        return found


class Course:
    """All stages of an event in one local metric frame."""

    def __init__(self, event: SampleEvent) -> None:
        self.event = event
        lons = [c[0] for s in event.stages for c in s.route.coordinates]
        lats = [c[1] for s in event.stages for c in s.route.coordinates]
        self.projection = Projection((min(lats) + max(lats)) / 2.0, (min(lons) + max(lons)) / 2.0)
        self.stages = [self.stage_course(stage) for stage in event.stages_in_order()]
        self.by_id = {c.stage.id: c for c in self.stages}

    def xy(self, coords: list[tuple[float, float]]) -> list[XY]:
        to_xy = self.projection.to_xy
        return [to_xy(lon, lat) for lon, lat in coords]

    def stage_course(self, stage: StageRow, route: Route | None = None) -> StageCourse:
        """A stage's geofence hits along its route, or along `route` (a scripted detour)."""
        route = route or Route(self.xy(stage.route.coordinates))
        fences = [g for g in self.event.geofences if g.stage in (stage.id, None)]
        gates: list[GateHit] = []
        zones: list[ZoneHit] = []
        waypoints: list[WaypointTable] = []
        for fence in fences:
            geom = fence.geometry
            if fence.kind in GATE_KINDS and isinstance(geom, LineString):
                gates.extend(_gate_hits(route, fence, self.xy(geom.coordinates)))
            elif isinstance(geom, Polygon):
                zones.extend(_zone_hits(route, fence, self.xy(geom.coordinates[0])))
            elif isinstance(geom, Point):
                centre = self.projection.to_xy(*geom.coordinates)
                waypoints.append(_waypoint_table(route, fence, centre))
        gates.sort(key=lambda h: h.s)
        zones.sort(key=lambda h: h.s)
        return StageCourse(stage, route, gates, zones, waypoints, fences)


def crossings(route: Route, line: list[XY]) -> list[tuple[float, float]]:
    """(arc length, cross(line direction, route direction)) where the route meets a polyline."""
    found: list[tuple[float, float]] = []
    xs, ys, rs = route.xs, route.ys, route.s
    for j in range(len(line) - 1):
        q0, q1 = line[j], line[j + 1]
        qminx, qmaxx = min(q0[0], q1[0]), max(q0[0], q1[0])
        qminy, qmaxy = min(q0[1], q1[1]), max(q0[1], q1[1])
        for i in range(len(xs) - 1):
            if max(xs[i], xs[i + 1]) < qminx or min(xs[i], xs[i + 1]) > qmaxx:
                continue
            if max(ys[i], ys[i + 1]) < qminy or min(ys[i], ys[i + 1]) > qmaxy:
                continue
            hit = segment_intersection((xs[i], ys[i]), (xs[i + 1], ys[i + 1]), q0, q1)
            if hit is None:
                continue
            s = rs[i] + hit[0] * (rs[i + 1] - rs[i])
            sense = cross(q1[0] - q0[0], q1[1] - q0[1], xs[i + 1] - xs[i], ys[i + 1] - ys[i])
            if not any(abs(s - other) < _DEDUP_M for other, _ in found):
                found.append((s, sense))
    return sorted(found)


def _gate_hits(route: Route, fence: GeofenceRow, line: list[XY]) -> list[GateHit]:
    return [GateHit(fence, s, sense > 0.0) for s, sense in crossings(route, line)]


def _zone_hits(route: Route, fence: GeofenceRow, ring: list[XY]) -> list[ZoneHit]:
    hits = []
    for s, _ in crossings(route, ring):
        x, y, _ = route.at(min(s + 1e-3, route.length))
        hits.append(ZoneHit(fence, s, point_in_polygon((x, y), ring)))
    return hits


def _waypoint_table(route: Route, fence: GeofenceRow, centre: XY) -> WaypointTable:
    table = WaypointTable(fence, centre, route)
    best = (math.inf, route.length)
    rows: list[tuple[float, float]] = []
    for i in range(len(route) - 2, -1, -1):
        dist, f = point_segment(centre, route.point(i), route.point(i + 1))
        best = min(best, (dist, route.s[i] + f * (route.s[i + 1] - route.s[i])))
        rows.append(best)
    rows.reverse()
    table.seg_best = rows
    return table

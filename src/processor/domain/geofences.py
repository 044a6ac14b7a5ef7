"""The geofence engine: where each fix-to-fix segment of a path meets each geofence.

Pure planar geometry in the event's local metric frame (`projection`); no time here
(`timing` turns segment fractions into times). Each result depends only on the
segment's own two fixes — plus the next fix for a waypoint's closest approach at a
vertex — so a segment gives the same hits whichever batch or window it is cut from.

Conventions, chosen so every point of the plane and every point of a gate belongs to
exactly one side / one piece, and a path can never be counted twice at a boundary:

- Gate side: a point on the gate's line counts as *left*. A segment crosses when its
  ends are on different sides; `forward` is right → left (DESIGN: the gate line
  first → last point, rotated 90° counter-clockwise). A segment ending exactly on the
  line has crossed; one lying along the line (collinear) has not.
- Gate extent: the crossing point must lie on the drawn line, ends included; on a
  polyline gate each inner vertex belongs to the piece that starts there.
- Zone inside: the even-odd rule with half-open edges (ray casting); an entry or exit
  is where the inside state changes along the segment.
- Waypoint: closest approach of the path to the point, reported where the distance
  has a local minimum ≤ radius: inside a segment (foot of the perpendicular), or at
  a fix where the path turns back (reported by the segment arriving there, which
  needs the segment leaving it).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

from processor.domain.config import (
    DomainConfig,
    Geofence,
    LineGeometry,
    PointGeometry,
    PolygonGeometry,
    geometry_coordinates,
)
from processor.domain.memo import Memo
from processor.domain.projection import XY, LocalProjection, centred_on
from processor.domain.shapes import Box, BoxIndex, segment_box

Transition = Literal["cross", "entry", "exit", "closest"]
GateDirection = Literal["forward", "reverse"]


@dataclass(frozen=True, slots=True)
class GateShape:
    fence: Geofence
    points: tuple[XY, ...]


@dataclass(frozen=True, slots=True)
class WaypointShape:
    fence: Geofence
    centre: XY
    radius_m: float


@dataclass(frozen=True, slots=True)
class ZoneShape:
    fence: Geofence
    rings: tuple[tuple[XY, ...], ...]  # closed: last point = first point


Shape = GateShape | WaypointShape | ZoneShape


class GeofenceIndex:
    """Projected geofences and an STRtree over their bounding boxes.

    Built once per configuration version; immutable afterwards (but for the memo of
    segments seen, which only saves work), so it can be shared by every device and
    window.
    """

    __slots__ = ("_boxes", "by_id", "projection", "seen", "shapes")

    def __init__(
        self, geofences: Iterable[Geofence], projection: LocalProjection | None = None
    ) -> None:
        fences = sorted(geofences, key=lambda g: g.id)
        if projection is None:
            points = [p for g in fences for p in geometry_coordinates(g.geometry)]
            projection = centred_on(points) if points else LocalProjection(0.0, 0.0)
        self.projection = projection
        self.shapes: tuple[Shape, ...] = tuple(_shape(g, projection) for g in fences)
        self.by_id = {s.fence.id: i for i, s in enumerate(self.shapes)}
        self._boxes = BoxIndex([_box(s) for s in self.shapes])
        # The hits of segments already tested (`path_hits`): consecutive windows of a
        # device re-read most of the same track.
        self.seen: Memo[SegmentKey, tuple[_Hit, ...]] = Memo(SEGMENTS_MEMO)

    @classmethod
    def from_config(cls, config: DomainConfig) -> GeofenceIndex:
        """All geofences of a configuration, in a frame centred on the whole event."""
        points = config.all_coordinates()
        projection = centred_on(points) if points else None
        return cls(config.geofences, projection)

    def __len__(self) -> int:
        return len(self.shapes)

    def candidates(self, boxes: Sequence[Box]) -> list[tuple[int, int]]:
        """(box index, shape index) pairs whose bounding boxes intersect, sorted."""
        return self._boxes.query(boxes)


class SegmentHit(NamedTuple):
    """One interaction of segment `segment` (points k → k+1) with shape `shape`."""

    segment: int
    shape: int
    ordinal: int  # rank among this shape's hits on this segment, by fraction
    fraction: float  # where along the segment, 0..1
    transition: Transition
    direction: GateDirection | None = None
    distance_m: float | None = None


# A segment (p0, p1) and the point after it, if joined (a waypoint's closest approach at
# p1 depends on it): all its hits depend on.
SegmentKey = tuple[XY, XY, XY | None]
# A hit without its segment: (shape, ordinal, fraction, transition, direction, distance).
_Hit = tuple[int, int, float, Transition, GateDirection | None, float | None]
# Segments remembered (~400 B each): a lagging batch's ~2 000 devices × ~50 segments fit.
SEGMENTS_MEMO = 1 << 17


def path_hits(
    points: Sequence[XY], connected: Sequence[bool], index: GeofenceIndex
) -> list[SegmentHit]:
    """Every hit of every connected segment of a path, sorted by (segment, shape, ordinal).

    `connected[k]` says whether points k and k+1 may be joined (not across a gap).
    Segments seen before are answered from `index.seen`; the rest in one box query.
    """
    last = len(connected) - 1
    hits: list[SegmentHit] = []
    unseen: list[tuple[int, SegmentKey]] = []
    for k, ok in enumerate(connected):
        if not ok:
            continue
        after = points[k + 2] if k < last and connected[k + 1] else None
        key = (points[k], points[k + 1], after)
        known = index.seen.get(key)
        if known is None:
            unseen.append((k, key))
        else:
            hits += [SegmentHit(k, *h) for h in known]
    found: list[list[_Hit]] = [[] for _ in unseen]
    boxes = [segment_box(p0, p1) for _, (p0, p1, _) in unseen]
    for qi, si in index.candidates(boxes):
        p0, p1, after = unseen[qi][1]
        found[qi] += _hits(p0, p1, after, si, index.shapes[si])
    for (k, key), segment_hits in zip(unseen, found, strict=True):
        index.seen.put(key, tuple(segment_hits))
        hits += [SegmentHit(k, *h) for h in segment_hits]
    hits.sort()
    return hits


def _hits(p0: XY, p1: XY, after: XY | None, si: int, shape: Shape) -> list[_Hit]:
    if isinstance(shape, GateShape):
        return [
            (si, n, f, "cross", direction, None)
            for n, (f, direction) in enumerate(gate_crossings(p0, p1, shape.points))
        ]
    if isinstance(shape, ZoneShape):
        return [
            (si, n, f, transition, None, None)
            for n, (f, transition) in enumerate(zone_transitions(p0, p1, shape.rings))
        ]
    found = closest_approach(p0, p1, shape.centre, after)
    if found is not None and found[1] <= shape.radius_m:
        return [(si, 0, found[0], "closest", None, found[1])]
    return []


# --- planar primitives ----------------------------------------------------------------


def gate_crossings(p0: XY, p1: XY, line: Sequence[XY]) -> list[tuple[float, GateDirection]]:
    """(fraction along p0→p1, direction) where the segment crosses a gate polyline."""
    x0, y0 = p0
    x1, y1 = p1
    found: list[tuple[float, GateDirection]] = []
    pieces = len(line) - 1
    for j in range(pieces):
        qx, qy = line[j]
        dx, dy = line[j + 1][0] - qx, line[j + 1][1] - qy
        s0 = dx * (y0 - qy) - dy * (x0 - qx)  # > 0: p0 left of the piece
        s1 = dx * (y1 - qy) - dy * (x1 - qx)
        if (s0 < 0.0) == (s1 < 0.0):
            continue
        f = s0 / (s0 - s1)
        cx, cy = x0 + f * (x1 - x0), y0 + f * (y1 - y0)
        u = ((cx - qx) * dx + (cy - qy) * dy) / (dx * dx + dy * dy)
        if u < 0.0 or u > 1.0 or (u == 1.0 and j < pieces - 1):
            continue
        direction: GateDirection = "forward" if s0 < 0.0 else "reverse"
        if not any(abs(f - g) <= 1e-12 and d == direction for g, d in found):
            found.append((f, direction))
    found.sort()
    return found


def inside(p: XY, rings: Sequence[Sequence[XY]]) -> bool:
    """Even-odd rule over closed rings (holes included), half-open edges."""
    x, y = p
    result = False
    for ring in rings:
        ax, ay = ring[0]
        for bx, by in ring[1:]:
            if (ay > y) != (by > y) and x < ax + (y - ay) * (bx - ax) / (by - ay):
                result = not result
            ax, ay = bx, by
    return result


def zone_transitions(
    p0: XY, p1: XY, rings: Sequence[Sequence[XY]]
) -> list[tuple[float, Literal["entry", "exit"]]]:
    """(fraction, entry/exit) where the inside state changes along p0→p1.

    States are probed at the ends and between consecutive edge intersections, so the
    transitions of consecutive segments always chain (the end state of one is the
    start state of the next) even when a fix lies exactly on the boundary.
    """
    x0, y0 = p0
    rx, ry = p1[0] - x0, p1[1] - y0
    if rx == 0.0 and ry == 0.0:
        return []
    params: set[float] = set()
    for ring in rings:
        ax, ay = ring[0]
        for bx, by in ring[1:]:
            ex, ey = bx - ax, by - ay
            denom = rx * ey - ry * ex
            if denom != 0.0:
                wx, wy = ax - x0, ay - y0
                t = (wx * ey - wy * ex) / denom
                u = (wx * ry - wy * rx) / denom
                if 0.0 <= t <= 1.0 and 0.0 <= u <= 1.0:
                    params.add(t)
            ax, ay = bx, by
    start, end = inside(p0, rings), inside(p1, rings)
    ts = sorted(params)
    if not ts:
        if start == end:
            return []
        ts = [_bisect_boundary(p0, p1, rings, start)]
    states = [start]
    for a, b in itertools.pairwise(ts):
        mid = (a + b) / 2.0
        states.append(inside((x0 + mid * rx, y0 + mid * ry), rings))
    states.append(end)
    found: list[tuple[float, Literal["entry", "exit"]]] = []
    for i, t in enumerate(ts):
        if states[i] != states[i + 1]:
            found.append((t, "entry" if states[i + 1] else "exit"))
    return found


def _bisect_boundary(p0: XY, p1: XY, rings: Sequence[Sequence[XY]], start: bool) -> float:
    """Where the state flips when no edge intersection was found (rounding at a vertex)."""
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2.0
        point = (p0[0] + mid * (p1[0] - p0[0]), p0[1] + mid * (p1[1] - p0[1]))
        if inside(point, rings) == start:
            lo = mid
        else:
            hi = mid
    return hi


def closest_approach(p0: XY, p1: XY, centre: XY, after: XY | None) -> tuple[float, float] | None:
    """(fraction, distance) of a local minimum of the distance to `centre` on p0→p1.

    Inside the segment: the foot of the perpendicular (0 < fraction < 1). At p1
    (fraction 1): when the distance stops decreasing there, which needs `after`
    (the next fix). A minimum at p0 belongs to the previous segment.
    """
    x0, y0 = p0
    x1, y1 = p1
    cx, cy = centre
    rx, ry = x1 - x0, y1 - y0
    length2 = rx * rx + ry * ry
    if length2 == 0.0:
        return None
    t = ((cx - x0) * rx + (cy - y0) * ry) / length2
    if 0.0 < t < 1.0:
        return t, math.hypot(x0 + t * rx - cx, y0 + t * ry - cy)
    if t >= 1.0 and after is not None:
        vx, vy = x1 - cx, y1 - cy
        if vx * (after[0] - x1) + vy * (after[1] - y1) >= 0.0:
            return 1.0, math.hypot(vx, vy)
    return None


# --- building -------------------------------------------------------------------------


def _shape(fence: Geofence, projection: LocalProjection) -> Shape:
    geometry = fence.geometry
    to_xy = projection.to_xy
    if isinstance(geometry, LineGeometry):
        return GateShape(fence, tuple(to_xy(lon, lat) for lon, lat in geometry.coordinates))
    if isinstance(geometry, PointGeometry):
        return WaypointShape(fence, to_xy(*geometry.coordinates), fence.radius_m or 0.0)
    assert isinstance(geometry, PolygonGeometry)
    rings = tuple(tuple(to_xy(lon, lat) for lon, lat in ring) for ring in geometry.rings)
    return ZoneShape(fence, rings)


def _box(shape: Shape) -> Box:
    if isinstance(shape, WaypointShape):
        (x, y), r = shape.centre, shape.radius_m
        return (x - r, y - r, x + r, y + r)
    pts = shape.points if isinstance(shape, GateShape) else shape.rings[0]
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts]
    return (min(xs), min(ys), max(xs), max(ys))

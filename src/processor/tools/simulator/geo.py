"""Local metric projection and the few planar primitives the simulator needs.

The projection is equirectangular around the event centre: an affine map of
(lon, lat). Straight segments in degrees therefore stay straight in metres and the
parameter of an intersection along a segment is the same in both, so a crossing time
computed here does not depend on which (locally affine) projection a consumer uses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

EARTH_RADIUS_M = 6_371_008.8  # IUGG mean radius

XY = tuple[float, float]


class Projection:
    """Degrees ⇄ metres east/north of a fixed origin."""

    __slots__ = ("kx", "ky", "lat0", "lon0")

    def __init__(self, lat0: float, lon0: float) -> None:
        self.lat0 = lat0
        self.lon0 = lon0
        self.ky = math.radians(1.0) * EARTH_RADIUS_M
        self.kx = self.ky * math.cos(math.radians(lat0))

    def to_xy(self, lon: float, lat: float) -> XY:
        return ((lon - self.lon0) * self.kx, (lat - self.lat0) * self.ky)

    def to_lonlat(self, x: float, y: float) -> XY:
        return (self.lon0 + x / self.kx, self.lat0 + y / self.ky)


def cross(ax: float, ay: float, bx: float, by: float) -> float:
    """z of the 2-D cross product: > 0 when b is counter-clockwise from a."""
    return ax * by - ay * bx


def side(a: XY, b: XY, p: XY) -> float:
    """Signed doubled area: > 0 when p is left of the directed line a→b."""
    return cross(b[0] - a[0], b[1] - a[1], p[0] - a[0], p[1] - a[1])


def segment_intersection(p0: XY, p1: XY, q0: XY, q1: XY) -> tuple[float, float] | None:
    """Parameters (t on p, u on q), both in [0, 1], where two segments meet; None if they
    don't or are parallel (a gate collinear with the road is not a crossing)."""
    rx, ry = p1[0] - p0[0], p1[1] - p0[1]
    sx, sy = q1[0] - q0[0], q1[1] - q0[1]
    denom = cross(rx, ry, sx, sy)
    if denom == 0.0:
        return None
    qpx, qpy = q0[0] - p0[0], q0[1] - p0[1]
    t = cross(qpx, qpy, sx, sy) / denom
    u = cross(qpx, qpy, rx, ry) / denom
    if 0.0 <= t <= 1.0 and 0.0 <= u <= 1.0:
        return t, u
    return None


def point_segment(p: XY, a: XY, b: XY) -> tuple[float, float]:
    """(distance, parameter along a→b in [0, 1]) of the closest point of a segment."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 == 0.0 else ((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / length2
    t = min(1.0, max(0.0, t))
    return math.hypot(a[0] + t * dx - p[0], a[1] + t * dy - p[1]), t


def point_in_polygon(p: XY, ring: Sequence[XY]) -> bool:
    """Even-odd rule; the ring may or may not repeat its first vertex."""
    x, y = p
    inside = False
    n = len(ring)
    for i in range(n):
        ax, ay = ring[i - 1]
        bx, by = ring[i]
        if (ay > y) != (by > y) and x < ax + (y - ay) * (bx - ax) / (by - ay):
            inside = not inside
    return inside


def bearing_deg(dx: float, dy: float) -> float:
    """Heading of a displacement, degrees clockwise from north in [0, 360)."""
    return math.degrees(math.atan2(dx, dy)) % 360.0

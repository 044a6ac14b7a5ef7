"""The local metric frame all domain geometry is computed in.

Choice: the WGS84 **tangent plane** at the event centre (east/north of a local ENU
frame, the point dropped orthogonally onto the plane). Why this one:

- It is exact on the ellipsoid at the origin (scale 1 in every direction, the
  meridian/prime-vertical radii difference of ~0.2 % at these latitudes included),
  where a spherical projection (azimuthal equidistant, Mercator) would already be off
  by up to 0.1 % in some direction, and an equirectangular map off by
  tan(φ)·Δφ (~0.44 % in x at 20 km north or south of the centre).
- Away from the origin its only error is the tilt of the plane: lengths shrink by
  at most 1 − cos(ρ/R) ≈ ρ²/2R². At ρ = 20 km that is 4.9·10⁻⁶: 0.25 mm over a
  50 m fix-to-fix segment, i.e. 0.25 mm/s at 50 m/s — far below the 1 cm/s budget
  (5·10⁻⁶ s on a 1 s segment). At 100 km it is 1.2·10⁻⁴, still 6 mm per 50 m.
- The map is smooth and closed-form (no series, no iteration on the forward path),
  so the same (lat, lon) always projects to the same bits: crossing results are
  reproducible whatever order or batch the fixes come in. Everything here is
  scalar `math` on purpose: vectorised numpy kernels may round differently at
  different positions of an array, which would break bit-identical recomputation.

Interpolation parameters (where a segment meets a gate) are what timing uses, and
they are invariant under any locally affine map; the projection matters for
distances (waypoint radius, segment lengths) and for angles (crossing direction).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from processor.domain.memo import Memo

WGS84_A = 6_378_137.0
WGS84_F = 1.0 / 298.257223563
WGS84_E2 = WGS84_F * (2.0 - WGS84_F)

XY = tuple[float, float]
LonLat = tuple[float, float]
# Points remembered (~250 B each): a lagging batch's ~2 000 devices × ~50 fixes fit.
PROJECTED_MEMO = 1 << 17


class LocalProjection:
    """(longitude, latitude) degrees ⇄ metres east/north of a fixed origin."""

    __slots__ = ("_east", "_memo", "_north", "_origin", "_up", "lat0", "lon0")

    def __init__(self, lat0: float, lon0: float) -> None:
        if not (math.isfinite(lat0) and math.isfinite(lon0)) or abs(lat0) > 89.0:
            raise ValueError("projection origin must be finite and not polar")
        self.lat0 = lat0
        self.lon0 = lon0
        sp, cp = math.sin(math.radians(lat0)), math.cos(math.radians(lat0))
        sl, cl = math.sin(math.radians(lon0)), math.cos(math.radians(lon0))
        self._origin = _ecef(lat0, lon0)
        self._east = (-sl, cl, 0.0)
        self._north = (-sp * cl, -sp * sl, cp)
        self._up = (cp * cl, cp * sl, sp)
        # Each fix is projected by every window that reads it (memo.py).
        self._memo: Memo[LonLat, XY] = Memo(PROJECTED_MEMO)

    def __repr__(self) -> str:
        return f"LocalProjection(lat0={self.lat0!r}, lon0={self.lon0!r})"

    def to_xy(self, lon: float, lat: float) -> XY:
        """Metres east and north of the origin (on the tangent plane)."""
        found = self._memo.get((lon, lat))
        if found is None:
            x, y, z = _ecef(lat, lon)
            ox, oy, oz = self._origin
            dx, dy, dz = x - ox, y - oy, z - oz
            e, n = self._east, self._north
            found = (e[0] * dx + e[1] * dy, n[0] * dx + n[1] * dy + n[2] * dz)
            self._memo.put((lon, lat), found)
        return found

    def to_lonlat(self, x: float, y: float) -> LonLat:
        """Inverse of `to_xy`: the ellipsoid point whose plane image is (x, y)."""
        ox, oy, oz = self._origin
        e, n, u = self._east, self._north, self._up
        qx = ox + x * e[0] + y * n[0]
        qy = oy + x * e[1] + y * n[1]
        qz = oz + y * n[2]
        # Walk along the plane normal to the ellipsoid: A·h² + B·h + C = 0, root near 0.
        a2, b2 = WGS84_A * WGS84_A, WGS84_A * WGS84_A * (1.0 - WGS84_E2)
        qa = (u[0] * u[0] + u[1] * u[1]) / a2 + u[2] * u[2] / b2
        qb = 2.0 * ((qx * u[0] + qy * u[1]) / a2 + qz * u[2] / b2)
        qc = (qx * qx + qy * qy) / a2 + qz * qz / b2 - 1.0
        h = -2.0 * qc / (qb + math.sqrt(qb * qb - 4.0 * qa * qc))
        px, py, pz = qx + h * u[0], qy + h * u[1], qz + h * u[2]
        # On the ellipsoid surface, geodetic latitude has a closed form.
        lat = math.degrees(math.atan2(pz, (1.0 - WGS84_E2) * math.hypot(px, py)))
        return (math.degrees(math.atan2(py, px)), lat)


def _ecef(lat: float, lon: float) -> tuple[float, float, float]:
    """Earth-centred coordinates of a point on the WGS84 ellipsoid (height 0)."""
    sp, cp = math.sin(math.radians(lat)), math.cos(math.radians(lat))
    sl, cl = math.sin(math.radians(lon)), math.cos(math.radians(lon))
    radius = WGS84_A / math.sqrt(1.0 - WGS84_E2 * sp * sp)
    return (radius * cp * cl, radius * cp * sl, radius * (1.0 - WGS84_E2) * sp)


def centred_on(points: Iterable[LonLat]) -> LocalProjection:
    """A projection centred on the bounding box of some (lon, lat) points.

    Derived from configuration only (never from fixes), so the frame — and every
    result computed in it — is a function of the configuration.
    """
    lons: list[float] = []
    lats: list[float] = []
    for lon, lat in points:
        lons.append(lon)
        lats.append(lat)
    if not lons:
        raise ValueError("no points to centre a projection on")
    return LocalProjection((min(lats) + max(lats)) / 2.0, (min(lons) + max(lons)) / 2.0)

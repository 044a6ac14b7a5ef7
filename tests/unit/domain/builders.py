"""Small synthetic geofences and tracks, drawn in metres around a fixed origin."""

from __future__ import annotations

from collections.abc import Sequence

from processor.core.position import Position
from processor.domain.config import (
    Direction,
    Geofence,
    GeofenceKind,
    LineGeometry,
    PointGeometry,
    PolygonGeometry,
)
from processor.domain.geofences import GeofenceIndex
from processor.domain.projection import XY, LocalProjection

PROJ = LocalProjection(54.6, 25.2)
T0 = 1_777_615_200_000  # 2026-05-01T06:00:00Z
DEVICE = "356307044410016"


def lonlat(p: XY) -> tuple[float, float]:
    return PROJ.to_lonlat(*p)


def gate(
    fence_id: int,
    points: Sequence[XY],
    direction: Direction = "forward",
    kind: GeofenceKind = "split_line",
) -> Geofence:
    geometry = LineGeometry(tuple(lonlat(p) for p in points))
    return Geofence(fence_id, 1, 1, kind, f"gate {fence_id}", geometry, fence_id, direction)


def waypoint(fence_id: int, centre: XY, radius_m: float) -> Geofence:
    geometry = PointGeometry(lonlat(centre))
    return Geofence(
        fence_id, 1, 1, "waypoint", f"wp {fence_id}", geometry, fence_id, radius_m=radius_m
    )


def zone(fence_id: int, *rings: Sequence[XY], kind: GeofenceKind = "zone") -> Geofence:
    closed = tuple(tuple(lonlat(p) for p in (*ring, ring[0])) for ring in rings)
    limit = 50.0 if kind == "speed_zone" else None
    return Geofence(
        fence_id,
        1,
        1,
        kind,
        f"zone {fence_id}",
        PolygonGeometry(closed),
        fence_id,
        speed_limit_kmh=limit,
    )


def index(*fences: Geofence) -> GeofenceIndex:
    """An index in the builders' own frame, so test coordinates are index coordinates."""
    return GeofenceIndex(fences, PROJ)


def fix(
    t_s: float,
    p: XY,
    speed_kmh: float | None = None,
    *,
    valid: bool = True,
    device: str = DEVICE,
    heading: float | None = None,
) -> Position:
    lon, lat = lonlat(p)
    ts = T0 + round(t_s * 1000)
    return Position(
        device_id=device,
        ts_ms=ts,
        received_at_ms=ts + 500,
        latitude=lat,
        longitude=lon,
        fix_valid=valid,
        stream_id=f"{ts + 500}-0",
        speed=speed_kmh,
        heading=heading,
    )


def straight(
    start: XY, velocity: XY, seconds: int, speed_kmh: float | None = None, t0_s: float = 0.0
) -> list[Position]:
    """1 Hz fixes along a straight line at constant velocity (m/s)."""
    return [
        fix(t0_s + i, (start[0] + velocity[0] * i, start[1] + velocity[1] * i), speed_kmh)
        for i in range(seconds + 1)
    ]

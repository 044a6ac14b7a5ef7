"""The local frame: invertible, and accurate enough that timing never notices it."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.domain.projection import WGS84_A, WGS84_E2, LocalProjection, centred_on

LAT0, LON0 = 54.61, 25.16  # the sample event's centre, roughly


def _radii(lat: float) -> tuple[float, float]:
    """WGS84 meridian and prime-vertical radii of curvature."""
    w = 1.0 - WGS84_E2 * math.sin(math.radians(lat)) ** 2
    return WGS84_A * (1.0 - WGS84_E2) / w**1.5, WGS84_A / math.sqrt(w)


def test_origin_is_zero_and_round_trip_is_exact() -> None:
    proj = LocalProjection(LAT0, LON0)
    assert proj.to_xy(LON0, LAT0) == (0.0, 0.0)
    for dlon, dlat in ((0.3, 0.2), (-0.31, 0.17), (0.0, -0.18), (0.001, 0.0)):
        x, y = proj.to_xy(LON0 + dlon, LAT0 + dlat)
        lon, lat = proj.to_lonlat(x, y)
        assert lon == pytest.approx(LON0 + dlon, abs=1e-11)
        assert lat == pytest.approx(LAT0 + dlat, abs=1e-11)


def test_axes_point_east_and_north_with_ellipsoidal_scale() -> None:
    """Scale 1 at the origin in both directions, with the ellipsoid's own radii (they
    differ by 0.2 % here: a sphere of any radius would be wrong in one of them)."""
    proj = LocalProjection(LAT0, LON0)
    meridian, prime = _radii(LAT0)
    step = 1e-4  # degrees: ~10 m
    x, y = proj.to_xy(LON0, LAT0 + step)
    assert abs(x) < 1e-9
    assert y == pytest.approx(meridian * math.radians(step), rel=1e-6)
    x, y = proj.to_xy(LON0 + step, LAT0)
    assert x == pytest.approx(prime * math.cos(math.radians(LAT0)) * math.radians(step), rel=1e-6)
    assert abs(y) < 1e-5  # the parallel is a small circle: it bends away from the plane


@pytest.mark.parametrize("bearing_deg", [0.0, 45.0, 90.0, 135.0])
@pytest.mark.parametrize("distance_km", [20.0, 50.0])
def test_scale_error_far_from_the_centre_is_negligible(
    bearing_deg: float, distance_km: float
) -> None:
    """A 50 m segment measured in the event frame, ρ km from its centre, against the
    same segment in a frame centred on it (exact at its own origin): the relative
    error must stay far below 1 cm per 50 m (the timing budget: 1 cm/s)."""
    proj = LocalProjection(LAT0, LON0)
    b = math.radians(bearing_deg)
    far = proj.to_lonlat(distance_km * 1000 * math.sin(b), distance_km * 1000 * math.cos(b))
    local = LocalProjection(far[1], far[0])
    for heading in (0.0, 60.0, 90.0, 150.0):
        h = math.radians(heading)
        end = local.to_lonlat(50.0 * math.sin(h), 50.0 * math.cos(h))
        a, c = proj.to_xy(*far), proj.to_xy(*end)
        error_m = abs(math.dist(a, c) - 50.0)
        bound = 50.0 * (distance_km / 6371.0) ** 2  # ρ²/R², twice the analytic tilt
        assert error_m <= bound
        assert error_m < 0.001 if distance_km <= 20 else error_m < 0.01


def test_centred_on_the_bounding_box() -> None:
    proj = centred_on([(25.0, 54.5), (25.4, 54.7), (25.2, 54.6)])
    assert (proj.lat0, proj.lon0) == pytest.approx((54.6, 25.2))
    with pytest.raises(ValueError, match="no points"):
        centred_on([])
    with pytest.raises(ValueError, match="polar"):
        LocalProjection(89.5, 0.0)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(st.floats(2.0, 2.4), st.floats(41.2, 41.6)), min_size=1, max_size=40).map(
        lambda pts: pts + pts[::2]
    )  # some points asked again
)
def test_remembered_points_project_to_the_same_bits(points: list[tuple[float, float]]) -> None:
    remembering = LocalProjection(41.4, 2.2)
    first = [remembering.to_xy(lon, lat) for lon, lat in points]
    again = [remembering.to_xy(lon, lat) for lon, lat in points]
    fresh = [LocalProjection(41.4, 2.2).to_xy(lon, lat) for lon, lat in points]
    assert first == again == fresh

"""Time within a segment: linear, constant acceleration from the reported speeds along
the chord or along the arc the headings imply, and the per-crossing choice."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processor.domain.interpolation import (
    ARC_MAX_TURN_DEG,
    DEFAULT_METHOD,
    HEADING_MIN_KMH,
    Method,
    arc_fraction,
    arc_length,
    heading_change,
    time_fraction,
)

KMH = 3.6


def test_linear_is_the_distance_fraction() -> None:
    assert time_fraction(0.3, "linear", 50.0, 90.0, 20.0, 1.0) == (0.3, "linear")
    assert time_fraction(1.2, "linear", None, None, 20.0, 1.0) == (1.0, "linear")
    assert time_fraction(-0.1, "linear", None, None, 20.0, 1.0) == (0.0, "linear")
    turning = time_fraction(0.3, "linear", 50.0, 50.0, 12.0, 1.0, h0_deg=0.0, h1_deg=80.0)
    assert turning == (0.3, "linear")


def test_start_from_standstill_is_exact() -> None:
    """0 → 4 m/s in 1 s (a = 4 m/s²) covers 2 m; 0.5 m is reached at √(2·0.5/4) s."""
    u, method = time_fraction(0.25, "speed", 0.0, 4.0 * KMH, 2.0, 1.0)
    assert method == "speed"
    assert u == pytest.approx(0.5)
    u_linear, _ = time_fraction(0.25, "linear", 0.0, 4.0 * KMH, 2.0, 1.0)
    assert u_linear == 0.25  # linear is half the truth here


def test_constant_acceleration_between_two_speeds() -> None:
    # 10 → 20 m/s in 1 s: 15 m; 6 m are covered when 10·τ + 5·τ² = 6.
    expected = (-10.0 + math.sqrt(100.0 + 120.0)) / 10.0
    u, _ = time_fraction(6.0 / 15.0, "speed", 10.0 * KMH, 20.0 * KMH, 15.0, 1.0)
    assert u == pytest.approx(expected)
    u, _ = time_fraction(0.4, "speed", 72.0, 72.0, 20.0, 1.0)
    assert u == pytest.approx(0.4)


def test_noisy_chord_is_shared_between_both_fixes_more_by_the_nearer() -> None:
    """At 20 m/s for 1 s the car covers 20 m; noise made the chord 22 m. Halfway, the
    2 m excess is split evenly (11 − 1 m along the track); at f of the chord, the
    second fix's share of it is (1 + 2f)/4, so near a fix the point moves by a quarter
    of the excess, not a half."""
    u, method = time_fraction(11.0 / 22.0, "speed", 72.0, 72.0, 22.0, 1.0)
    assert method == "speed"
    assert u == pytest.approx(0.5)
    f = 2.0 / 22.0
    u, _ = time_fraction(f, "speed", 72.0, 72.0, 22.0, 1.0)
    assert u == pytest.approx((2.0 - (1.0 + 2.0 * f) / 4.0 * 2.0) / 20.0)
    at_start, _ = time_fraction(0.0, "speed", 72.0, 72.0, 22.0, 1.0)
    at_end, _ = time_fraction(1.0, "speed", 72.0, 72.0, 22.0, 1.0)
    assert (at_start, at_end) == (0.0, 1.0)  # clamped: 0.5 m before / after the fixes


@pytest.mark.parametrize("method", ["speed", "auto"])
@pytest.mark.parametrize(
    ("v0", "v1", "chord"),
    [
        (None, 50.0, 20.0),  # a speed is missing
        (50.0, None, 20.0),
        (0.0, 0.0, 3.0),  # standing still yet moving: drift
        (10.0, 10.0, 60.0),  # 2.8 m by speed, 60 m by position: stale speed or a jump
        (200.0, 200.0, 5.0),
        (math.nan, 50.0, 20.0),
    ],
)
def test_falls_back_to_linear_when_speeds_cannot_be_trusted(
    method: Method, v0: float | None, v1: float | None, chord: float
) -> None:
    assert time_fraction(0.3, method, v0, v1, chord, 1.0) == (0.3, "linear")
    turning = time_fraction(0.3, method, v0, v1, chord, 1.0, h0_deg=0.0, h1_deg=60.0)
    assert turning == (0.3, "linear")


def test_default_is_the_per_crossing_choice() -> None:
    assert DEFAULT_METHOD == "auto"


def test_heading_change_is_the_shorter_signed_turn() -> None:
    assert heading_change(350.0, 10.0) == pytest.approx(20.0)
    assert heading_change(10.0, 350.0) == pytest.approx(-20.0)
    assert heading_change(90.0, 90.0) == 0.0
    assert heading_change(None, 10.0) is None
    assert heading_change(10.0, math.nan) is None


@pytest.mark.parametrize("turn_deg", [1.0, 30.0, -60.0, 100.0, 140.0])
@pytest.mark.parametrize("phi", [0.05, 0.3, 0.5, 0.81])
def test_arc_length_and_fraction_of_a_radial_line_on_a_circle(turn_deg: float, phi: float) -> None:
    """A circle of radius 12 m from angle 0 to the turn; a radial line (a gate drawn
    across the road) at `phi` of the turn meets the chord where a line intersection
    says, and `arc_fraction` maps that back to `phi`."""
    radius, turn = 12.0, math.radians(turn_deg)
    p0, p1 = (radius, 0.0), (radius * math.cos(turn), radius * math.sin(turn))
    chord = math.dist(p0, p1)
    assert arc_length(chord, turn_deg) == pytest.approx(radius * abs(turn))
    ray = (math.cos(phi * turn), math.sin(phi * turn))
    f = _ray_meets_segment(ray, p0, p1)
    assert arc_fraction(f, turn_deg) == pytest.approx(phi)


def _ray_meets_segment(
    ray: tuple[float, float], p0: tuple[float, float], p1: tuple[float, float]
) -> float:
    """Fraction along p0→p1 where the ray from the origin meets it."""
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    # p0 + f·d = k·ray → f = (ray × p0) / (d × ray)
    return (ray[0] * p0[1] - ray[1] * p0[0]) / (dx * ray[1] - dy * ray[0])


def _circle_case(radius: float, v0: float, v1: float, phi: float) -> tuple[float, ...]:
    """A car on a circle, tangential acceleration constant from v0 to v1 (m/s) in 1 s,
    a radial gate at `phi` of the arc: (chord fraction, chord, turn °, true τ)."""
    covered = (v0 + v1) / 2.0
    turn = covered / radius
    p0, p1 = (radius, 0.0), (radius * math.cos(turn), radius * math.sin(turn))
    f = _ray_meets_segment((math.cos(phi * turn), math.sin(phi * turn)), p0, p1)
    s, a = phi * covered, v1 - v0
    tau = 2.0 * s / (v0 + math.sqrt(v0 * v0 + 2.0 * a * s))
    return f, math.dist(p0, p1), math.degrees(turn), tau


@pytest.mark.parametrize(
    ("radius", "v0", "v1", "phi"),
    [
        (10.0, 10.0, 10.0, 0.2),  # a hairpin at 36 km/h: 57° in a second
        (8.0, 9.0, 13.0, 0.7),  # accelerating out of it: 63°
        (6.0, 12.0, 9.0, 0.45),  # braking into it: 100°
        (40.0, 22.0, 18.0, 0.9),  # a bend at 72 km/h: 29°
    ],
)
def test_auto_uses_the_arc_in_a_turn_and_is_exact_on_a_circle(
    radius: float, v0: float, v1: float, phi: float
) -> None:
    """The car leaves (r, 0) heading north (0°, clockwise from north) and turns left
    (counter-clockwise), so the second fix's heading is −turn."""
    f, chord, turn, tau = _circle_case(radius, v0, v1, phi)
    h0, h1 = 0.0, (-turn) % 360.0
    u, used = time_fraction(f, "auto", v0 * KMH, v1 * KMH, chord, 1.0, h0_deg=h0, h1_deg=h1)
    assert used == "arc"
    assert u == pytest.approx(tau, abs=1e-9)
    # The chord models are off. `speed` reads the arc's extra length as noise and pulls
    # the time towards mid-segment: at a steady speed in a sharp turn it is worse than
    # linear, which ignores the speeds altogether.
    speed, _ = time_fraction(f, "speed", v0 * KMH, v1 * KMH, chord, 1.0, h0_deg=h0, h1_deg=h1)
    assert abs(speed - tau) > abs(u - tau) + 0.003
    if v0 == v1 and turn > 45.0:
        assert abs(speed - tau) > abs(f - tau) > abs(u - tau) + 0.003


def test_auto_is_the_speed_model_on_a_straight_or_without_headings() -> None:
    args = (0.3, 40.0, 60.0, 13.9, 1.0)
    speed = time_fraction(args[0], "speed", *args[1:])
    assert speed[1] == "speed"
    assert time_fraction(args[0], "auto", *args[1:]) == speed
    assert time_fraction(args[0], "auto", *args[1:], h0_deg=None, h1_deg=40.0) == speed
    assert time_fraction(args[0], "auto", *args[1:], h0_deg=359.0, h1_deg=1.0) == speed
    # The explicit `speed` model ignores headings.
    assert time_fraction(args[0], "speed", *args[1:], h0_deg=0.0, h1_deg=60.0) == speed


def test_headings_at_walking_pace_are_not_used() -> None:
    """A GNSS heading near standstill is noise: off the start line (0 → 18 km/h) the
    first fix's heading says nothing about the road."""
    slow = max(0.0, HEADING_MIN_KMH - 1.0)
    args = (0.4, slow, 18.0, 2.9, 1.0)
    assert time_fraction(args[0], "auto", *args[1:], h0_deg=200.0, h1_deg=10.0) == time_fraction(
        args[0], "speed", *args[1:]
    )


def test_turns_sharper_than_the_arc_limit_are_linear() -> None:
    turn = ARC_MAX_TURN_DEG + 5.0
    u, used = time_fraction(0.3, "auto", 30.0, 30.0, 3.0, 1.0, h0_deg=0.0, h1_deg=turn)
    assert (u, used) == (0.3, "linear")
    u, used = time_fraction(0.3, "auto", 30.0, 30.0, 5.0, 1.0, h0_deg=0.0, h1_deg=-120.0)
    assert used == "arc"


@given(
    v0=st.floats(0.0, 200.0),
    v1=st.floats(0.0, 200.0),
    noise=st.floats(-3.0, 3.0),
    fractions=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=6),
)
def test_speed_model_is_monotonic_and_bounded(
    v0: float, v1: float, noise: float, fractions: list[float]
) -> None:
    chord = max(0.0, (v0 + v1) / 2.0 / KMH + noise)
    times = [time_fraction(f, "speed", v0, v1, chord, 1.0)[0] for f in sorted(fractions)]
    assert all(0.0 <= u <= 1.0 for u in times)
    assert all(a <= b + 1e-12 for a, b in itertools.pairwise(times))


@given(
    v0=st.floats(0.0, 200.0),
    v1=st.floats(0.0, 200.0),
    turn=st.floats(-179.0, 179.0),
    noise=st.floats(-3.0, 3.0),
    fractions=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=6),
)
def test_auto_is_monotonic_and_bounded_in_any_turn(
    v0: float, v1: float, turn: float, noise: float, fractions: list[float]
) -> None:
    half = math.radians(abs(turn)) / 2.0
    path = (v0 + v1) / 2.0 / KMH
    chord = max(0.0, path * (math.sin(half) / half if half else 1.0) + noise)
    times = [
        time_fraction(f, "auto", v0, v1, chord, 1.0, h0_deg=10.0, h1_deg=10.0 + turn)[0]
        for f in sorted(fractions)
    ]
    assert all(0.0 <= u <= 1.0 for u in times)
    assert all(a <= b + 1e-12 for a, b in itertools.pairwise(times))

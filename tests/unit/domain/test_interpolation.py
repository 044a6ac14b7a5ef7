"""Time within a segment: linear, and constant acceleration from the reported speeds."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processor.domain.interpolation import DEFAULT_METHOD, time_fraction

KMH = 3.6


def test_linear_is_the_distance_fraction() -> None:
    assert time_fraction(0.3, "linear", 50.0, 90.0, 20.0, 1.0) == (0.3, "linear")
    assert time_fraction(1.2, "linear", None, None, 20.0, 1.0) == (1.0, "linear")
    assert time_fraction(-0.1, "linear", None, None, 20.0, 1.0) == (0.0, "linear")


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


def test_noisy_chord_is_split_between_both_fixes() -> None:
    """At 20 m/s for 1 s the car covers 20 m; noise made the chord 22 m. The point 11 m
    from the first fix is 11 − 1 m along the track (the excess split over both ends)."""
    u, method = time_fraction(11.0 / 22.0, "speed", 72.0, 72.0, 22.0, 1.0)
    assert method == "speed"
    assert u == pytest.approx(0.5)
    u, _ = time_fraction(2.0 / 22.0, "speed", 72.0, 72.0, 22.0, 1.0)
    assert u == pytest.approx(1.0 / 20.0)


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
    v0: float | None, v1: float | None, chord: float
) -> None:
    assert time_fraction(0.3, "speed", v0, v1, chord, 1.0) == (0.3, "linear")


def test_default_is_the_speed_model() -> None:
    assert DEFAULT_METHOD == "speed"


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

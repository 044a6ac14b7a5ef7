"""Speed-zone measurement, speed penalties (table and formula) and missed waypoints.

Tracks run east along y = 0 with positions integrated from their speeds (trapezoids),
so the path the measurement follows is the one the speed profile describes.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.core.position import Position
from processor.domain.config import Geofence
from processor.domain.penalties import (
    SpeedPenalty,
    ZoneSpeed,
    measure_speed_zone,
    missed_waypoints,
    speed_penalty,
)
from processor.domain.rules import SpeedBand, SpeedPenaltyRule, WaypointPenaltyRule
from tests.unit.domain.builders import T0, fix, gate, waypoint, zone

KMH = 3.6
TABLE = SpeedPenaltyRule()  # tolerance 3 km/h, 3 s, bands 0/10/20/40 → 60/120/300/900 s
FORMULA = SpeedPenaltyRule(style="formula")  # factor 10
PROPERTY = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def track(speeds: Sequence[float], times_s: Sequence[float] | None = None) -> list[Position]:
    """Fixes at `times_s` (default 0, 1, 2 … s after T0) with these speeds, positioned
    where a car whose speed is linear between fixes would be."""
    times = list(times_s) if times_s is not None else list(range(len(speeds)))
    x, fixes = 0.0, []
    for i, (t, v) in enumerate(zip(times, speeds, strict=True)):
        if i:
            x += (speeds[i - 1] + v) / 2 / KMH * (t - times[i - 1])
        fixes.append(fix(t, (x, 0.0), v))
    return fixes


def ms(seconds: float) -> int:
    return T0 + round(seconds * 1000)


def measure(
    fixes: Sequence[Position],
    entry_s: float,
    exit_s: float,
    limit: float = 60.0,
    tolerance: float = 3.0,
) -> ZoneSpeed:
    return measure_speed_zone(fixes, ms(entry_s), ms(exit_s), limit, limit + tolerance)


def constant(speed_kmh: float, seconds: int = 10) -> list[Position]:
    return track([speed_kmh] * (seconds + 1))


# The car of the brief: 1 Hz, 60 → 72 km/h in 1 s, 8 s at 72, back to 60 in 1 s.
TWELVE_OVER = track([60.0, 60.0, 72.0, 72, 72, 72, 72, 72, 72, 72, 72, 60.0, 60.0])


# --- measurement ---------------------------------------------------------------------


def test_constant_speed_above_the_limit() -> None:
    z = measure(constant(80.0), 2.5, 7.5)
    assert (z.max_speed_kmh, z.time_over_ms, z.longest_over_ms) == (80.0, 5000.0, 5000.0)
    assert z.longest_over_from_ms == ms(2.5)
    assert z.max_speed_at_ms == ms(2.5)  # the earliest time of the maximum
    assert z.metres_gained == pytest.approx(20 / KMH * 5)
    assert z.distance_m == pytest.approx(80 / KMH * 5, abs=1e-6)
    assert z.average_kmh == pytest.approx(80.0, abs=1e-6)
    assert (z.fixes_inside, z.implied_speeds, z.max_gap_ms, z.duration_ms) == (5, 0, 1000, 5000)


def test_ramp_up_and_down_crosses_the_threshold_at_exact_times() -> None:
    # 50 → 70 km/h over 4 s and back: 63 km/h is crossed at 2.6 s and 5.4 s.
    z = measure(track([50.0, 70.0, 50.0], [0, 4, 8]), 0, 8)
    assert z.time_over_ms == pytest.approx(2800.0)
    assert z.longest_over_ms == pytest.approx(2800.0)
    assert z.longest_over_from_ms == pytest.approx(ms(2.6))
    assert (z.max_speed_kmh, z.max_speed_at_ms) == (70.0, ms(4))
    assert z.average_kmh == pytest.approx(60.0, abs=1e-6)  # the mean of the symmetric ramp


def test_metres_gained_for_a_triangle_profile() -> None:
    # Above 60 km/h from 2 s to 6 s, peaking 10 km/h over: ½ · 10 km/h · 4 s.
    z = measure(track([50.0, 70.0, 50.0], [0, 4, 8]), 0, 8)
    assert z.metres_gained == pytest.approx(0.5 * 10 / KMH * 4)


def test_entry_and_exit_speeds_are_interpolated() -> None:
    # 50 → 70 between fixes 4 s apart; the zone is [1 s, 3 s] with no fix inside.
    z = measure(track([50.0, 70.0], [0, 4]), 1, 3)
    assert (z.fixes_inside, z.max_speed_kmh, z.max_speed_at_ms) == (0, 65.0, ms(3))
    assert z.time_over_ms == pytest.approx(1000 * (65 - 63) / 5)  # 63 reached at 2.6 s
    assert z.longest_over_from_ms == pytest.approx(ms(2.6))
    # The car's position follows the same profile: 55 → 65 km/h for 2 s is 60 km/h mean.
    assert z.distance_m == pytest.approx(60 / KMH * 2, abs=1e-6)


def test_single_fix_inside() -> None:
    z = measure(track([60.0, 80.0, 60.0], [0, 2, 4]), 1, 3)
    # The ends hold the inside fix's speed: the maximum is reached from the entry on.
    assert (z.fixes_inside, z.max_speed_kmh, z.max_speed_at_ms) == (1, 80.0, ms(1))
    # The ends hold the inside fix's 80 km/h: the fixes outside (60) are outside.
    assert (z.time_over_ms, z.longest_over_ms) == (2000.0, 2000.0)
    assert z.metres_gained == pytest.approx(2 * 20 / KMH)


def test_braking_into_the_zone_is_not_measured_from_outside() -> None:
    # 90 km/h before the zone, 60 at the line (1 s) and inside: the speed at the entry
    # is the inside fixes', not 75 interpolated from the fix outside.
    z = measure(track([90.0, 60.0, 60.0, 60.0], [0, 2, 3, 4]), 1, 4)
    assert z.max_speed_kmh == 60.0
    assert z.time_over_ms == 0.0


def test_zero_duration_passage() -> None:
    z = measure(track([50.0, 70.0], [0, 4]), 2, 2)
    assert (z.max_speed_kmh, z.average_kmh, z.distance_m) == (60.0, 60.0, 0.0)
    assert (z.time_over_ms, z.longest_over_ms, z.metres_gained) == (0.0, 0.0, 0.0)
    assert z.longest_over_from_ms is None
    hot = measure(constant(90.0), 2, 2)
    assert hot.max_speed_kmh == 90.0
    assert speed_penalty(hot, SpeedPenaltyRule(min_duration_s=0.0)) is None


def test_entry_and_exit_on_fixes() -> None:
    z = measure(constant(80.0), 2, 4)
    assert (z.fixes_inside, z.max_gap_ms, z.time_over_ms) == (1, 1000, 2000.0)
    assert z.distance_m == pytest.approx(80 / KMH * 2, abs=1e-6)


def test_missing_speeds_fall_back_to_implied_speeds() -> None:
    moving = [msgspec.structs.replace(p, speed=None) for p in constant(72.0)]
    z = measure(moving, 0.5, 9.5)
    assert z.implied_speeds == 11
    assert z.max_speed_kmh == pytest.approx(72.0, abs=1e-6)
    assert z.average_kmh == pytest.approx(72.0, abs=1e-6)
    mixed = constant(72.0)
    mixed[5] = msgspec.structs.replace(mixed[5], speed=None)
    assert measure(mixed, 0.5, 9.5).implied_speeds == 1
    assert measure(mixed, 0.5, 9.5).max_speed_kmh == pytest.approx(72.0, abs=1e-6)


def test_only_the_bracketing_fixes_matter() -> None:
    fixes = constant(80.0)
    base = measure(fixes[2:8], 2.5, 6.5)
    noisy = [
        *fixes,
        fix(3.2, (0.0, 0.0), 500.0, valid=False),  # invalid fixes are ignored
        fix(30, (9999.0, 0.0), None),  # far outside the passage
    ]
    assert measure(noisy, 2.5, 6.5) == base
    assert measure(list(reversed(noisy)), 2.5, 6.5) == base


def test_gaps_are_reported() -> None:
    z = measure(track([80.0, 80.0, 80.0, 80.0], [0, 1, 6, 7]), 0.5, 6.5)
    assert (z.max_gap_ms, z.fixes_inside) == (5000, 2)


@pytest.mark.parametrize(
    ("entry_s", "exit_s", "message"),
    [(5, 4, "before entry"), (-1, 4, "bracket"), (1, 11, "bracket")],
)
def test_bad_passages_are_refused(entry_s: float, exit_s: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        measure(constant(80.0), entry_s, exit_s)


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="limit"):
        measure_speed_zone(constant(80.0), ms(1), ms(2), 0.0, 3.0)


# --- speed penalties -------------------------------------------------------------------


def test_twelve_over_for_eight_seconds_table_and_formula() -> None:
    z = measure(TWELVE_OVER, 0.5, 11.5)
    # 63 km/h is crossed 0.25 s after each ramp starts and 0.75 s into the ramp down.
    assert z.time_over_ms == pytest.approx(9500.0)
    assert z.longest_over_ms == pytest.approx(9500.0)
    assert z.longest_over_from_ms == pytest.approx(ms(1.25))
    # Over the limit: a 1 s ramp (6 km/h·s), 8 s at +12 (96), a 1 s ramp (6) = 30 m.
    assert z.metres_gained == pytest.approx(108 / KMH)

    table = speed_penalty(z, TABLE)
    assert table is not None
    assert table.amount_ms == 120_000
    assert table.evidence["over_kmh"] == 12.0
    assert table.evidence["band_over_kmh"] == 10.0
    assert table.evidence["band_penalty_s"] == 120.0
    assert "band ≥ 10 km/h over → 120 s" in table.reason

    formula = speed_penalty(z, FORMULA)
    assert formula is not None
    # 30 m at 60 km/h (16.67 m/s) is 1.8 s gained, × 10.
    assert formula.amount_ms == 18_000
    assert formula.evidence["limit_m_s"] == pytest.approx(60 / KMH)
    assert formula.evidence["factor"] == 10.0
    assert "band_over_kmh" not in formula.evidence


def test_evidence_carries_every_number_used() -> None:
    penalty = speed_penalty(measure(TWELVE_OVER, 0.5, 11.5), TABLE)
    assert penalty is not None
    assert set(penalty.evidence) >= {
        "style",
        "limit_kmh",
        "tolerance_kmh",
        "threshold_kmh",
        "min_duration_s",
        "entry_ms",
        "exit_ms",
        "max_speed_kmh",
        "over_kmh",
        "time_over_ms",
        "longest_over_ms",
        "metres_gained",
        "average_kmh",
        "band_over_kmh",
        "band_penalty_s",
        "penalty_s",
        "amount_ms",
    }
    assert (penalty.evidence["entry_ms"], penalty.evidence["exit_ms"]) == (ms(0.5), ms(11.5))
    assert penalty.evidence["threshold_kmh"] == 63.0
    assert msgspec.json.decode(msgspec.json.encode(penalty), type=SpeedPenalty) == penalty


@pytest.mark.parametrize(
    ("speed", "tolerance", "penalised"),
    [
        (63.0, 3.0, False),  # at limit + tolerance: not above it
        (63.01, 3.0, True),
        (60.0, 0.0, False),
        (60.5, 0.0, True),
        (59.0, 3.0, False),
    ],
)
def test_tolerance_boundary(speed: float, tolerance: float, penalised: bool) -> None:
    rule = SpeedPenaltyRule(tolerance_kmh=tolerance)
    penalty = speed_penalty(measure(constant(speed), 1, 9, tolerance=tolerance), rule)
    assert (penalty is not None) == penalised
    if penalty is not None:
        assert penalty.amount_ms == 60_000  # the 0 km/h band: measured from the limit


@pytest.mark.parametrize(("exit_s", "penalised"), [(4.0, True), (3.999, False)])
def test_min_duration_boundary(exit_s: float, penalised: bool) -> None:
    z = measure(constant(70.0), 1, exit_s)
    assert (speed_penalty(z, TABLE) is not None) == penalised


def test_min_duration_is_exact_on_ramps() -> None:
    # 63 → 73 in 1 s, 73 for 1 s, 73 → 63 in 1 s: above 63 for exactly 3 s.
    z = measure(track([63.0, 73.0, 73.0, 63.0]), 0, 3)
    assert z.longest_over_ms == 3000.0
    assert speed_penalty(z, TABLE) is not None
    assert speed_penalty(z, SpeedPenaltyRule(min_duration_s=3.001)) is None


def test_min_duration_needs_one_continuous_run() -> None:
    # Two 2 s runs above 63 km/h, split by a dip to 62: 4 s in all, longest 2 s.
    z = measure(track([70.0, 70.0, 70.0, 62.0, 70.0, 70.0, 70.0]), 0, 6)
    assert z.time_over_ms > 3000.0
    assert z.longest_over_ms < 3000.0
    assert speed_penalty(z, TABLE) is None


def test_touching_the_threshold_splits_a_run() -> None:
    z = measure(track([70.0, 70.0, 63.0, 70.0, 70.0]), 0, 4)
    assert z.time_over_ms == 4000.0
    assert z.longest_over_ms == 2000.0


@pytest.mark.parametrize(
    ("over", "penalty_s"),
    [
        (3.5, 60),
        (9.99, 60),
        (10.0, 120),  # band edges are inclusive
        (19.99, 120),
        (20.0, 300),
        (39.99, 300),
        (40.0, 900),
        (75.0, 900),
    ],
)
def test_band_selection_at_edges(over: float, penalty_s: int) -> None:
    penalty = speed_penalty(measure(constant(60.0 + over), 1, 9), TABLE)
    assert penalty is not None
    assert penalty.amount_ms == penalty_s * 1000


def test_below_the_first_band_there_is_no_penalty() -> None:
    rule = SpeedPenaltyRule(bands=(SpeedBand(5.0, 30.0), SpeedBand(15.0, 90.0)))
    assert speed_penalty(measure(constant(64.0), 1, 9), rule) is None
    penalty = speed_penalty(measure(constant(65.0), 1, 9), rule)
    assert penalty is not None
    assert penalty.amount_ms == 30_000


def test_formula_numbers() -> None:
    # The rule's own example: 18 km/h (5 m/s) over a 50 km/h limit for 10 s gains 50 m;
    # at 50 km/h that is 3.6 s; × 10 → 36 s.
    z = measure(constant(68.0, seconds=12), 1, 11, limit=50.0)
    assert z.metres_gained == pytest.approx(50.0)
    penalty = speed_penalty(z, FORMULA)
    assert penalty is not None
    assert penalty.amount_ms == 36_000
    assert penalty.evidence["penalty_s"] == pytest.approx(36.0)
    half = speed_penalty(z, SpeedPenaltyRule(style="formula", factor=0.5))
    assert half is not None
    assert half.amount_ms == 1_800


def test_rule_and_measurement_must_agree_on_the_threshold() -> None:
    z = measure(constant(80.0), 1, 9, tolerance=5.0)
    with pytest.raises(ValueError, match="rule says 63"):
        speed_penalty(z, TABLE)


# --- properties ------------------------------------------------------------------------

speeds_st = st.floats(min_value=0.0, max_value=200.0, allow_nan=False)


@st.composite
def passages(draw: st.DrawFn) -> tuple[list[Position], int, int]:
    n = draw(st.integers(min_value=2, max_value=10))
    gaps = draw(st.lists(st.integers(1, 5000), min_size=n - 1, max_size=n - 1))
    times = [0, *itertools.accumulate(gaps)]
    speeds = draw(st.lists(speeds_st, min_size=n, max_size=n))
    fixes = track(speeds, [t / 1000 for t in times])
    a, b = sorted(draw(st.integers(0, times[-1])) for _ in range(2))
    return fixes, T0 + a, T0 + b


def table_amount(fixes: list[Position], entry: int, exit_: int) -> int:
    z = measure_speed_zone(fixes, entry, exit_, 60.0, 63.0)
    penalty = speed_penalty(z, TABLE)
    return 0 if penalty is None else penalty.amount_ms


@PROPERTY
@given(passages())
def test_time_over_within_the_passage(passage: tuple[list[Position], int, int]) -> None:
    z = measure_speed_zone(*passage, 60.0, 63.0)
    assert 0.0 <= z.longest_over_ms <= z.time_over_ms <= z.duration_ms
    assert z.metres_gained >= 0.0
    assert z.max_speed_kmh >= z.threshold_kmh or z.time_over_ms == 0.0


@PROPERTY
@given(passages(), st.floats(min_value=0.0, max_value=60.0))
def test_no_metres_gained_at_or_under_the_limit(
    passage: tuple[list[Position], int, int], limit_margin: float
) -> None:
    fixes, entry, exit_ = passage
    limit = max(1.0, max(p.speed or 0.0 for p in fixes) + limit_margin)
    z = measure_speed_zone(fixes, entry, exit_, limit, limit + 3.0)
    assert (z.metres_gained, z.time_over_ms) == (0.0, 0.0)
    assert speed_penalty(z, TABLE) is None


@PROPERTY
@given(passages(), st.floats(min_value=0.0, max_value=50.0))
def test_faster_never_lowers_a_table_penalty(
    passage: tuple[list[Position], int, int], extra: float
) -> None:
    fixes, entry, exit_ = passage
    faster = [msgspec.structs.replace(p, speed=(p.speed or 0.0) + extra) for p in fixes]
    assert table_amount(faster, entry, exit_) >= table_amount(fixes, entry, exit_)


@PROPERTY
@given(passages(), st.randoms(use_true_random=False))
def test_fix_order_does_not_matter(
    passage: tuple[list[Position], int, int], rnd: random.Random
) -> None:
    fixes, entry, exit_ = passage
    twin = rnd.choice(fixes)  # another record of the same time: one is kept, by value
    shuffled = [*fixes, msgspec.structs.replace(twin, speed=(twin.speed or 0.0) + 1.0)]
    rnd.shuffle(shuffled)
    reordered = sorted(shuffled, key=lambda p: (-p.ts_ms, -(p.speed or 0.0)))
    assert measure_speed_zone(shuffled, entry, exit_, 60.0, 63.0) == measure_speed_zone(
        reordered, entry, exit_, 60.0, 63.0
    )


# --- missed waypoints ------------------------------------------------------------------

RULE = WaypointPenaltyRule(default_s=1800.0, by_type={"WPV": 3600.0, "WPS": 900.5})


def layout() -> list[Geofence]:
    return [
        waypoint(30, (0.0, 0.0), 90.0),
        waypoint(10, (100.0, 0.0), 90.0),
        gate(5, [(0.0, -8.0), (0.0, 8.0)]),
        zone(6, [(0.0, 0.0), (10.0, 0.0), (10.0, 10.0)]),
        waypoint(20, (200.0, 0.0), 90.0),
        waypoint(40, (300.0, 0.0), 90.0),
    ]


def test_missed_waypoints_by_type_and_default() -> None:
    types = {10: "WPV", 20: "WPM", 30: "WPS"}
    missed = missed_waypoints(layout(), {20}, RULE, types)
    assert [(m.geofence_id, m.waypoint_type, m.amount_ms) for m in missed] == [
        (10, "WPV", 3_600_000),
        (30, "WPS", 900_500),
        (40, None, 1_800_000),  # no type: the default
    ]
    assert missed[0].evidence == {
        "geofence_id": 10,
        "name": "wp 10",
        "sequence": 10,
        "stage_id": 1,
        "waypoint_type": "WPV",
        "radius_m": 90.0,
        "rule": "by_type",
        "penalty_s": 3600.0,
    }
    assert missed[2].evidence["rule"] == "default_s"
    assert "WPV 'wp 10'" in missed[0].reason


def test_unlisted_type_takes_the_default() -> None:
    [m] = missed_waypoints(layout(), {10, 30, 40}, RULE, {20: "WPM"})
    assert (m.geofence_id, m.waypoint_type, m.amount_ms) == (20, "WPM", 1_800_000)
    assert m.evidence["rule"] == "default_s"


def test_all_visited_or_none_given() -> None:
    assert missed_waypoints(layout(), {10, 20, 30, 40}, RULE) == []
    assert missed_waypoints([], set(), RULE) == []
    assert [m.amount_ms for m in missed_waypoints(layout(), set(), RULE)] == [1_800_000] * 4

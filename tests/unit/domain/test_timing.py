"""Crossings of synthetic tracks: timing, direction, gap, debounce, keys and windows."""

from __future__ import annotations

import math
import random

import msgspec
import pytest

from processor.core.position import Position
from processor.domain.timing import (
    DEFAULT_SETTINGS,
    Crossing,
    TimingSettings,
    affected_span,
    any_hits,
    context_span,
    recompute_window,
)
from tests.unit.domain.builders import T0, fix, gate, index, straight, waypoint, zone

# Gate on x = 0 drawn south → north: `forward` is a westbound crossing.
LINE = [(0.0, -8.0), (0.0, 8.0)]
WEST = (-20.0, 0.0)  # m/s
EAST = (20.0, 0.0)


def gates(direction: str = "forward") -> list[Crossing]:
    idx = index(gate(1, LINE, direction))  # type: ignore[arg-type]
    westbound = straight((50.0, 0.0), WEST, 5, 72.0)
    eastbound = straight((-50.0, 0.0), EAST, 5, 72.0, t0_s=100.0)
    return recompute_window(westbound + eastbound, idx)


def test_crossing_time_position_fixes_and_key() -> None:
    idx = index(gate(1, LINE, kind="start_line"))
    track = straight((50.0, 0.0), WEST, 5, 72.0)  # at x = 50 − 20 t: line at t = 2.5 s
    [c] = recompute_window(track, idx)
    assert (c.kind, c.transition, c.direction, c.status) == (
        "start_line",
        "cross",
        "forward",
        "valid",
    )
    assert c.crossed_at_ms == T0 + 2500
    assert c.fraction == pytest.approx(0.5)
    assert (c.before.ts_ms, c.after.ts_ms) == (T0 + 2000, T0 + 3000)
    assert c.before.speed_kmh == 72.0
    assert c.key == (track[0].device_id, 1, T0 + 2000, T0 + 3000, 0)
    assert c.latitude == pytest.approx((track[2].latitude + track[3].latitude) / 2)
    assert c.method == "speed"
    assert c.stage_id == 1


def test_a_gate_in_a_hairpin_is_timed_along_the_arc_the_headings_describe() -> None:
    """A kart on a circle of 10 m at 36 km/h: 57° of heading between two fixes. The
    fixes' headings reach the interpolation: `auto` times the gate along the arc
    (exact here), where linear is 14 ms late and `speed` 18 ms."""
    radius, gate_at = 10.0, 2.3  # rad/s × s: the gate is crossed at 2.3 s

    def on_circle(t: float) -> Position:
        heading = math.degrees(math.atan2(-math.sin(t), math.cos(t))) % 360.0
        return fix(t, (radius * math.cos(t), radius * math.sin(t)), 36.0, heading=heading)

    ray = (math.cos(gate_at), math.sin(gate_at))
    idx = index(gate(1, [(5.0 * ray[0], 5.0 * ray[1]), (15.0 * ray[0], 15.0 * ray[1])], "either"))
    track = [on_circle(float(t)) for t in range(5)]
    [c] = recompute_window(track, idx)
    assert (c.method, c.crossed_at_ms) == ("arc", T0 + 2300)
    assert (c.before.heading, c.after.heading) == (track[2].heading, track[3].heading)
    [linear] = recompute_window(track, idx, settings=TimingSettings(method="linear"))
    [speed] = recompute_window(track, idx, settings=TimingSettings(method="speed"))
    assert (linear.method, speed.method) == ("linear", "speed")
    assert (
        10
        <= abs(linear.crossed_at_ms - c.crossed_at_ms)
        < abs(speed.crossed_at_ms - c.crossed_at_ms)
    )


def test_direction_forward_reverse_either() -> None:
    assert [c.direction for c in gates("forward")] == ["forward"]
    assert [c.direction for c in gates("reverse")] == ["reverse"]
    assert [c.direction for c in gates("either")] == ["forward", "reverse"]


def test_wrong_direction_is_kept_only_for_audit() -> None:
    idx = index(gate(1, LINE, "forward"))
    eastbound = straight((-50.0, 0.0), EAST, 5, 72.0)
    assert recompute_window(eastbound, idx) == []
    [c] = recompute_window(eastbound, idx, include_rejected=True)
    assert (c.direction, c.status) == ("reverse", "wrong_direction")


def test_records_without_a_fix_are_ignored() -> None:
    idx = index(gate(1, LINE, "either"))
    track = straight((50.0, 0.0), WEST, 5, 72.0)
    # No-fix records: last known position, or 0,0 — on the other side of the gate.
    noise = [
        fix(2.5, (-30.0, 0.0), 0.0, valid=False),
        fix(0.5, (-40.0, 0.0), 0.0, valid=False),
        fix(7.0, (90.0, 0.0), valid=False),
    ]
    assert recompute_window(track + noise, idx) == recompute_window(track, idx)
    assert len(recompute_window(track, idx)) == 1


def test_segments_longer_than_the_gap_limit_are_not_interpolated() -> None:
    idx = index(gate(1, LINE, "either"))
    far_apart = [fix(0.0, (50.0, 0.0), 36.0), fix(40.0, (-50.0, 0.0), 36.0)]
    assert recompute_window(far_apart, idx) == []
    wide = TimingSettings(max_gap_ms=60_000)
    [c] = recompute_window(far_apart, idx, settings=wide)
    assert c.crossed_at_ms == T0 + 20_000
    assert c.method == "linear"  # 36 km/h for 40 s is 400 m, not 100 m: speeds distrusted


def test_jitter_on_the_line_is_debounced_first_valid_crossing_wins() -> None:
    idx = index(gate(1, LINE, "forward"))
    approach = straight((20.0, 0.0), (-4.0, 0.0), 4, 14.0)  # reaches x = 4 at 4 s
    parked = [fix(5.0 + i, (1.0 if i % 2 else -1.0, 0.5), 0.0) for i in range(8)]  # 5..12 s
    leave = straight((-2.0, 0.0), (-10.0, 0.0), 4, 36.0, t0_s=13.0)
    back_again = straight((40.0, 0.0), WEST, 4, 72.0, t0_s=40.0)  # next lap, 27 s later
    track = approach + parked + leave + back_again
    valid = recompute_window(track, idx)
    assert [c.crossed_at_ms for c in valid] == [valid[0].crossed_at_ms, T0 + 42_000]
    assert T0 + 4000 < valid[0].crossed_at_ms <= T0 + 5000
    audit = recompute_window(track, idx, include_rejected=True)
    assert {c.status for c in audit} == {"valid", "debounced", "wrong_direction"}
    no_debounce = TimingSettings(debounce_ms=0)
    assert len(recompute_window(track, idx, settings=no_debounce)) == 6


def test_zone_entry_exit_and_graze() -> None:
    square = [(0.0, 0.0), (100.0, 0.0), (100.0, 100.0), (0.0, 100.0)]
    idx = index(zone(5, square, kind="speed_zone"))
    through = straight((-30.0, 50.0), (20.0, 0.0), 8, 72.0)
    entry, exit_ = recompute_window(through, idx)
    assert (entry.transition, entry.crossed_at_ms) == ("entry", T0 + 1500)
    assert (exit_.transition, exit_.crossed_at_ms) == ("exit", T0 + 6500)
    # Driving along the boundary, one noisy fix 1 m inside: a graze, not a visit.
    graze = [fix(i, (-50.0 + 20.0 * i, -1.0 if i != 4 else 1.0), 72.0) for i in range(10)]
    assert recompute_window(graze, idx) == []
    assert [c.status for c in recompute_window(graze, idx, include_rejected=True)] == [
        "debounced",
        "debounced",
    ]


def test_waypoint_closest_approach_within_radius() -> None:
    idx = index(waypoint(7, (0.0, 12.0), 15.0), waypoint(8, (0.0, -40.0), 15.0))
    track = straight((-50.0, 0.0), EAST, 5, 72.0)
    [c] = recompute_window(track, idx)
    assert (c.geofence_id, c.transition, c.kind) == (7, "closest", "waypoint")
    assert c.distance_m == pytest.approx(12.0, abs=1e-6)
    assert c.crossed_at_ms == T0 + 2500


def test_waypoint_jitter_keeps_the_closest_minimum_of_a_pass() -> None:
    idx = index(waypoint(7, (0.0, 0.0), 30.0))
    zigzag = [fix(i, (-25.0 + 5.0 * i, 6.0 if i % 2 else -4.0), 18.0) for i in range(11)]
    valid = recompute_window(zigzag, idx)
    audit = recompute_window(zigzag, idx, include_rejected=True)
    assert len(valid) == 1
    assert len(audit) > 1
    assert valid[0].distance_m == min(c.distance_m or 0.0 for c in audit)


def test_one_device_per_call_and_duplicates_resolved_by_value() -> None:
    idx = index(gate(1, LINE, "either"))
    track = straight((50.0, 0.0), WEST, 5, 72.0)
    twin = msgspec.structs.replace(track[2], received_at_ms=0, stream_id="other")
    assert recompute_window([twin, *track], idx) == recompute_window(track, idx)
    other = msgspec.structs.replace(track[0], device_id="X")
    with pytest.raises(ValueError, match="several devices"):
        recompute_window([*track, other], idx)


def _jittery_track() -> list[Position]:
    """Laps through a gate and a zone, with stops on the line (debounce matters)."""
    rng = random.Random(3)
    fixes = []
    x, t = 60.0, 0.0
    for _ in range(400):
        t += rng.choice((1.0, 1.0, 1.0, 2.0, 45.0 if rng.random() < 0.02 else 1.0))
        x -= rng.choice((0.0, 1.5, 3.0, 20.0))
        if x < -60.0:
            x = 60.0
        fixes.append(fix(t, (x + rng.gauss(0, 1.5), rng.gauss(0, 1.5)), rng.uniform(0, 40)))
    return fixes


def _windows(
    fixes: list[Position], size_ms: int, context_ms: int
) -> list[tuple[int, list[Position]]]:
    first, last = fixes[0].ts_ms, fixes[-1].ts_ms
    out = []
    for start in range(first, last + 1, size_ms):
        lo, hi = start - context_ms, start + size_ms + context_ms
        out.append((start, [p for p in fixes if lo <= p.ts_ms <= hi]))
    return out


def test_windows_with_their_context_reproduce_one_pass_bit_for_bit() -> None:
    idx = index(gate(1, LINE, "forward"), zone(2, [(-10, -5), (10, -5), (10, 5), (-10, 5)]))
    track = _jittery_track()
    whole = recompute_window(track, idx, include_rejected=True)
    assert {c.status for c in whole} == {"valid", "debounced", "wrong_direction"}
    for size in (7_000, 30_000, 61_000):
        pieces: list[Crossing] = []
        for start, fixes in _windows(track, size, DEFAULT_SETTINGS.context_ms):
            lo, hi = context_span(start, start + size, DEFAULT_SETTINGS)
            assert all(lo <= p.ts_ms <= hi for p in fixes)
            random.Random(size).shuffle(fixes)
            pieces += recompute_window(
                fixes, idx, window=(start, start + size), include_rejected=True
            )
        assert msgspec.json.encode(pieces) == msgspec.json.encode(whole)


def test_one_fix_of_context_is_enough_for_geometry_but_not_for_debounce() -> None:
    """Why windows carry `context_ms`: with only the fix before and after, a jitter
    echo just after a window boundary cannot see the crossing that debounces it."""
    idx = index(gate(1, LINE, "forward"))
    xs = [5.0, -1.0, 1.0, -1.0, -10.0, -20.0]  # across, back, across again: jitter
    track = [fix(float(i), (x, 0.0), 7.0) for i, x in enumerate(xs)]
    whole = recompute_window(track, idx, include_rejected=True)
    assert [c.status for c in whole] == ["valid", "wrong_direction", "debounced"]
    boundary = T0 + 2200  # the echo at 2.5 s falls in the second window
    first = recompute_window(track[:4], idx, window=(T0, boundary), include_rejected=True)
    narrow = recompute_window(track[2:], idx, window=(boundary, T0 + 9000), include_rejected=True)
    assert [c.key for c in first + narrow] == [c.key for c in whole]  # same geometry
    assert [c.status for c in first + narrow] == ["valid", "wrong_direction", "valid"]
    lo, hi = context_span(boundary, T0 + 9000, DEFAULT_SETTINGS)
    wide = [p for p in track if lo <= p.ts_ms <= hi]
    again = recompute_window(wide, idx, window=(boundary, T0 + 9000), include_rejected=True)
    assert first + again == whole


def test_a_late_fix_re_cuts_one_segment_and_changes_nothing_outside_its_span() -> None:
    idx = index(gate(1, LINE, "either"), gate(2, [(-200.0, -8.0), (-200.0, 8.0)], "either"))
    track = straight((105.0, 0.0), (-10.0, 0.0), 40, 36.0)  # gate 1 at 10.5 s
    late = fix(10.25, (2.5, 0.3), 36.0)  # lands in the segment crossing gate 1
    before = {c.key: c for c in recompute_window(track, idx)}
    after = {c.key: c for c in recompute_window([*track, late], idx)}
    gone, new = set(before) - set(after), set(after) - set(before)
    assert [k.geofence_id for k in gone] == [1]
    assert [(k.before_ts_ms, k.after_ts_ms) for k in new] == [(T0 + 10_250, T0 + 11_000)]
    assert {k: before[k] for k in before if k not in gone} == {
        k: after[k] for k in after if k not in new
    }
    lo, hi = affected_span(late.ts_ms, late.ts_ms, DEFAULT_SETTINGS)
    assert all(lo <= before[k].crossed_at_ms < hi for k in gone)
    assert all(lo <= after[k].crossed_at_ms < hi for k in new)


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="max_gap_ms"):
        TimingSettings(max_gap_ms=0)
    assert TimingSettings().context_ms == 40_000


def test_in_order_fast_path_sees_exactly_the_segments_that_matter() -> None:
    idx = index(gate(1, LINE, "either"), waypoint(2, (-100.0, 5.0), 10.0))
    track = straight((105.0, 0.0), (-10.0, 0.0), 30, 36.0)
    with_hits = set()
    for i in range(2, len(track)):
        if any_hits(track[i - 2 : i + 1], idx):
            with_hits.add(i)
    # Gate crossed in segment 10 → 11 s, waypoint passed in 20 → 21 s: each segment is
    # seen when its end fix arrives and once more as the older of the two segments.
    assert with_hits == {11, 12, 21, 22}
    assert not any_hits(track[:1], idx)

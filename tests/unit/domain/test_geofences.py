"""Planar geometry of the engine: gates, zones, waypoints, and the spatial index."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.domain.geofences import (
    closest_approach,
    gate_crossings,
    inside,
    path_hits,
    zone_transitions,
)
from processor.domain.memo import Memo
from processor.domain.projection import XY
from tests.unit.domain.builders import gate, index, waypoint, zone

# A gate drawn south → north on x = 0. Its left is the west, so `forward` (right →
# left) is a westbound crossing — a driver heading west sees the south end on the left.
GATE: list[XY] = [(0.0, -5.0), (0.0, 5.0)]
SQUARE: list[XY] = [(0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0), (0.0, 0.0)]


def crossings_of(path: list[XY], line: list[XY] = GATE) -> list[tuple[int, float, str]]:
    """(segment, fraction, direction) along a polyline path."""
    return [
        (k, f, d)
        for k in range(len(path) - 1)
        for f, d in gate_crossings(path[k], path[k + 1], line)
    ]


def test_direction_is_right_to_left_of_the_drawn_line() -> None:
    assert gate_crossings((1.0, 0.0), (-1.0, 0.0), GATE) == [(0.5, "forward")]
    assert gate_crossings((-1.0, 0.0), (3.0, 0.0), GATE) == [(0.25, "reverse")]
    assert gate_crossings((1.0, 0.0), (2.0, 0.0), GATE) == []  # same side
    assert gate_crossings((1.0, 6.0), (-1.0, 6.0), GATE) == []  # beyond the gate's end


def test_segment_touching_a_gate_end_counts_and_just_beyond_does_not() -> None:
    assert gate_crossings((1.0, 5.0), (-1.0, 5.0), GATE) == [(0.5, "forward")]
    assert gate_crossings((1.0, -5.0), (-1.0, -5.0), GATE) == [(0.5, "forward")]
    assert gate_crossings((1.0, 5.000001), (-1.0, 5.000001), GATE) == []


def test_a_fix_exactly_on_the_line_is_counted_once() -> None:
    # Arrives on the line, then carries on: one crossing, at the fix on the line.
    assert crossings_of([(1.0, 0.0), (0.0, 0.0), (-1.0, 0.0)]) == [(0, 1.0, "forward")]
    # Reaches the line from the left and goes back: never crossed.
    assert crossings_of([(-1.0, 0.0), (0.0, 0.0), (-1.0, 1.0)]) == []
    # Reaches it from the right and goes back: there and back (debounce merges them).
    assert crossings_of([(1.0, 0.0), (0.0, 0.0), (1.0, 1.0)]) == [
        (0, 1.0, "forward"),
        (1, 0.0, "reverse"),
    ]


def test_collinear_and_zero_length_segments_do_not_cross() -> None:
    assert gate_crossings((0.0, -3.0), (0.0, 3.0), GATE) == []
    assert gate_crossings((0.0, -8.0), (0.0, 8.0), GATE) == []
    assert gate_crossings((1.0, 0.0), (1.0, 0.0), GATE) == []
    assert gate_crossings((0.0, 0.0), (0.0, 0.0), GATE) == []


def test_polyline_gate_vertex_is_counted_once() -> None:
    straight = [(0.0, -5.0), (0.0, 0.0), (0.0, 5.0)]
    assert gate_crossings((1.0, 0.0), (-1.0, 0.0), straight) == [(0.5, "forward")]
    bent = [(0.0, -5.0), (0.0, 0.0), (3.0, 5.0)]
    assert gate_crossings((1.0, 0.0), (-1.0, 0.0), bent) == [(0.5, "forward")]
    # A zig-zag crossed twice by one segment: two hits, ordered along the segment.
    zigzag = [(0.0, -5.0), (2.0, 5.0), (4.0, -5.0)]
    assert [d for _, d in gate_crossings((-1.0, 0.0), (5.0, 0.0), zigzag)] == [
        "reverse",
        "forward",
    ]


def test_zone_entry_and_exit_are_interpolated_at_the_boundary() -> None:
    assert zone_transitions((-5.0, 5.0), (5.0, 5.0), [SQUARE]) == [(0.5, "entry")]
    assert zone_transitions((5.0, 5.0), (15.0, 5.0), [SQUARE]) == [(0.5, "exit")]
    assert zone_transitions((-5.0, 5.0), (15.0, 5.0), [SQUARE]) == [
        (0.25, "entry"),
        (0.75, "exit"),
    ]
    assert zone_transitions((2.0, 2.0), (8.0, 8.0), [SQUARE]) == []
    assert zone_transitions((2.0, 2.0), (2.0, 2.0), [SQUARE]) == []


def test_zone_boundary_fix_and_corner_graze_chain_consistently() -> None:
    on_edge = (0.0, 5.0)
    first = zone_transitions((-5.0, 5.0), on_edge, [SQUARE])
    second = zone_transitions(on_edge, (5.0, 5.0), [SQUARE])
    assert [t for _, t in first + second] == ["entry"]
    assert zone_transitions((-1.0, 1.0), (1.0, -1.0), [SQUARE]) == []  # through a corner only


def test_zone_with_a_hole() -> None:
    hole: list[XY] = [(4.0, 4.0), (6.0, 4.0), (6.0, 6.0), (4.0, 6.0), (4.0, 4.0)]
    found = zone_transitions((-5.0, 5.0), (15.0, 5.0), [SQUARE, hole])
    assert found == [(0.25, "entry"), (0.45, "exit"), (0.55, "entry"), (0.75, "exit")]
    assert not inside((5.0, 5.0), [SQUARE, hole])
    assert inside((2.0, 5.0), [SQUARE, hole])


def test_waypoint_closest_approach_inside_a_segment() -> None:
    hit = closest_approach((-10.0, 0.0), (10.0, 0.0), (0.0, 10.0), None)
    assert hit == (0.5, 10.0)
    assert closest_approach((-10.0, 0.0), (-5.0, 0.0), (0.0, 10.0), None) is None


def test_waypoint_closest_approach_at_a_turning_fix_needs_the_next_fix() -> None:
    centre = (5.0, 0.0)
    assert closest_approach((-10.0, 0.0), (0.0, 0.0), centre, None) is None
    assert closest_approach((-10.0, 0.0), (0.0, 0.0), centre, (-10.0, 1.0)) == (1.0, 5.0)
    # Still approaching after the fix: the minimum is further on, not here.
    assert closest_approach((-10.0, 0.0), (0.0, 0.0), centre, (4.0, 1.0)) is None
    assert closest_approach((0.0, 0.0), (0.0, 0.0), centre, (-1.0, 0.0)) is None


def test_path_hits_respect_radius_gap_and_order() -> None:
    idx = index(
        gate(1, GATE),
        waypoint(2, (20.0, 8.0), 10.0),
        waypoint(3, (20.0, 30.0), 10.0),
        zone(4, [(32.0, -10.0), (40.0, -10.0), (40.0, 10.0), (32.0, 10.0)]),
    )
    path: list[XY] = [(-10.0, 0.0), (10.0, 0.0), (30.0, 0.0), (50.0, 0.0)]
    hits = path_hits(path, [True, True, True], idx)
    fences = [(h.segment, idx.shapes[h.shape].fence.id, h.transition) for h in hits]
    assert fences == [(0, 1, "cross"), (1, 2, "closest"), (2, 4, "entry"), (2, 4, "exit")]
    assert hits[0].direction == "reverse"
    assert hits[1].distance_m == pytest.approx(8.0)
    assert math.isclose(hits[1].fraction, 0.5)
    # A segment over the gap limit is not interpolated at all.
    assert [h.segment for h in path_hits(path, [False, True, False], idx)] == [1]


def test_index_cost_does_not_grow_with_far_away_geofences() -> None:
    near = [gate(1, GATE), waypoint(2, (20.0, 8.0), 10.0)]
    far = [gate(100 + i, [(5000.0 + 30 * i, 0.0), (5000.0 + 30 * i, 10.0)]) for i in range(2000)]
    path: list[XY] = [(-10.0 + 5 * i, 0.0) for i in range(10)]
    boxes = [
        (min(a[0], b[0]), min(a[1], b[1]), max(a[0], b[0]), max(a[1], b[1]))
        for a, b in itertools.pairwise(path)
    ]
    small, big = index(*near), index(*near, *far)
    assert len(big.candidates(boxes)) == len(small.candidates(boxes))
    ids_small = [
        (h.segment, small.shapes[h.shape].fence.id) for h in path_hits(path, [True] * 9, small)
    ]
    ids_big = [(h.segment, big.shapes[h.shape].fence.id) for h in path_hits(path, [True] * 9, big)]
    assert ids_small == ids_big


_coordinate = st.floats(-60.0, 60.0, allow_nan=False).map(lambda v: round(v, 1))


@settings(max_examples=200, deadline=None)
@given(
    path=st.lists(st.tuples(_coordinate, _coordinate), min_size=2, max_size=12),
    gaps=st.lists(st.booleans(), min_size=11, max_size=11),
    start=st.integers(0, 10),
    capacity=st.integers(1, 8),
)
def test_remembered_segments_give_the_same_hits_as_fresh_ones(
    path: list[XY], gaps: list[bool], start: int, capacity: int
) -> None:
    """Consecutive windows re-test most of a track; the memo must not change a bit of
    the answer, wherever a segment sits in the path and however small the memo."""
    fences = (
        gate(1, GATE),
        waypoint(2, (20.0, 8.0), 10.0),
        zone(4, [(32.0, -10.0), (40.0, -10.0), (40.0, 10.0), (32.0, 10.0)]),
        zone(5, SQUARE[:-1], [(3.0, 3.0), (6.0, 3.0), (6.0, 6.0), (3.0, 6.0)]),
    )
    connected = [not g for g in gaps[: len(path) - 1]]
    warm = index(*fences)
    warm.seen = Memo(capacity)
    # Warm it with an overlapping part of the path (its segments at other positions).
    part = path[min(start, len(path) - 2) :]
    path_hits(part, connected[len(path) - len(part) :], warm)
    first = path_hits(path, connected, warm)
    again = path_hits(path, connected, warm)
    assert first == again == path_hits(path, connected, index(*fences))

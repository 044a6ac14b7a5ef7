"""What a window can change in the timing (`processor.domain.windows`): in order or a
re-cut of history, whether its new segments touch a geofence. `timing_scope` has its
property in tests/unit/domain_runner/test_timing_scope.py."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from processor.core.position import Position
from processor.domain.timing import DEFAULT_SETTINGS
from processor.domain.windows import appended_without_hits, in_order, inside
from tests.unit.domain.builders import T0, gate, index, straight

# A gate across the road at x = 100 m (the track runs east along y = 0 at 10 m/s).
INDEX = index(gate(1, [(100.0, -20.0), (100.0, 20.0)]))
TRACK = straight((0.0, 0.0), (10.0, 0.0), 30, 36.0)


@dataclass(frozen=True, slots=True)
class W:
    start_ms: int
    end_ms: int


def window(first_s: int, last_s: int) -> W:
    return W(T0 + first_s * 1000, T0 + last_s * 1000)


def test_inside_is_the_windows_own_records() -> None:
    assert [p.ts_ms for p in inside(TRACK, window(3, 5))] == [T0 + 3000, T0 + 4000, T0 + 5000]


def test_a_window_extends_the_track_unless_a_later_record_arrived_first() -> None:
    w = window(10, 12)
    newest = max(p.received_at_ms for p in inside(TRACK, w))
    assert in_order(TRACK[:13], w, None)  # nothing later stored
    assert in_order(TRACK, w, newest)  # later records arrived later (or with it)
    assert not in_order(TRACK, w, newest - 1)  # a buffered upload filling history
    assert not in_order(TRACK, window(40, 41), None)  # no record of its own


def test_appended_segments_without_a_geofence_need_no_timing() -> None:
    assert appended_without_hits(TRACK[:6], window(4, 5), INDEX, DEFAULT_SETTINGS)
    # The segment from 9 s to 10 s crosses the gate at x = 100 m.
    assert not appended_without_hits(TRACK[:12], window(10, 11), INDEX, DEFAULT_SETTINGS)
    # A later window's own segments are past the gate again...
    assert appended_without_hits(TRACK[:20], window(15, 19), INDEX, DEFAULT_SETTINGS)
    # ... and without any geofence nothing can be said.
    assert not appended_without_hits(TRACK[:6], window(4, 5), None, DEFAULT_SETTINGS)


def test_invalid_fixes_add_no_segment() -> None:
    invalid: list[Position] = [
        msgspec.structs.replace(p, fix_valid=False) if 9 <= (p.ts_ms - T0) // 1000 <= 10 else p
        for p in TRACK[:13]
    ]
    # 8 s → 11 s crosses the gate: the window's first valid fix makes that segment.
    assert not appended_without_hits(invalid, window(9, 11), INDEX, DEFAULT_SETTINGS)
    assert appended_without_hits(invalid, window(9, 10), INDEX, DEFAULT_SETTINGS)

"""What a window of newly stored records can change in the timing: pure rules.

A window is a device's time range `[start_ms, end_ms]` whose records were (re)stored
(a committed notice names it). These rules tell, from the records alone, whether the
window extends the device's track or re-cuts its history (`in_order`), whether it can
change any timing record at all (`appended_without_hits`), and which crossings it can
change and which fixes decide them (`timing_scope`).

Invariant: each is a function of its arguments only (no clock, no I/O), and is
conservative — when it cannot tell, it answers "may change" (False, or the general
bound), so a fast path built on it never skips work that would change an output.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from processor.core.position import Position
from processor.domain.geofences import GeofenceIndex
from processor.domain.timing import TimingSettings, any_hits


class TimeWindow(Protocol):
    """A device's window of stored records (the runner's `Window` is one)."""

    @property
    def start_ms(self) -> int: ...
    @property
    def end_ms(self) -> int: ...


def inside(records: Sequence[Position], window: TimeWindow) -> list[Position]:
    """The window's own records."""
    return [p for p in records if window.start_ms <= p.ts_ms <= window.end_ms]


def in_order(records: Sequence[Position], window: TimeWindow, first_later_ms: int | None) -> bool:
    """Whether the window extends the device's track: every record later in time
    (`first_later_ms`: when the earliest-received of them arrived, None if none) also
    arrived later. Those later records are then in later notices, not handled yet
    (notices are handled in order). A later record that arrived before the window's
    (the window is a buffered upload filling history) makes it a re-cut: the full path."""
    own = inside(records, window)
    if not own:
        return False
    return first_later_ms is None or first_later_ms >= max(p.received_at_ms for p in own)


def appended_without_hits(
    fixes: Sequence[Position],
    window: TimeWindow,
    index: GeofenceIndex | None,
    settings: TimingSettings,
) -> bool:
    """For a window that extends the device's track (`in_order`, the caller's check):
    none of the segments its fixes add touches a geofence (`timing.any_hits`), so no
    timing record in the affected span can change and nothing needs recomputing."""
    if index is None:
        return False
    valid = [p for p in fixes if p.fix_valid and p.ts_ms <= window.end_ms]
    first_new = next((i for i, p in enumerate(valid) if p.ts_ms >= window.start_ms), len(valid))
    return not any_hits(valid[max(0, first_new - 2) :], index, settings)


def timing_scope(
    fixes: list[Position],
    window: TimeWindow,
    span: tuple[int, int],
    read_from_ms: int,
    settings: TimingSettings,
) -> tuple[tuple[int, int], list[Position]]:
    """The crossings a window can change, and the fixes that decide them: tighter than
    `affected_span`/`context_span`, which must assume the longest segment
    (`max_gap_ms`) because they know no fixes.

    Knowing them: the new fixes change the segments from the valid fix before the
    window to the one after it, hence raw hits there; a crossing's verdict depends on
    hits of its geofence less than d = max(debounce, 2 × zone debounce) away (timing.py),
    so crossings in [before − d, after + d] may change, and those are decided by the hits
    within d of them: the segments that reach [before − 2d, after + 2d]. At 1 Hz that is
    ~45 fixes instead of the ~170 of the general bound. Falls back to the general bound
    `span` (with every fix) when the read, from `read_from_ms`, does not reach that far
    back (a gap before the window).
    """
    d = settings.context_ms - settings.max_gap_ms
    valid = [p for p in fixes if p.fix_valid]
    before = max((p.ts_ms for p in valid if p.ts_ms < window.start_ms), default=None)
    after = min((p.ts_ms for p in valid if p.ts_ms > window.end_ms), default=window.end_ms)
    if before is None or before - 2 * d <= read_from_ms:
        return span, fixes
    lo, hi = before - d, after + d + 1
    first = max((i for i, p in enumerate(valid) if p.ts_ms < lo - d), default=0)
    last = min((i for i, p in enumerate(valid) if p.ts_ms > hi + d), default=len(valid) - 1)
    return (lo, hi), valid[first : last + 1]

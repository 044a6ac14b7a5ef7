"""`timing_scope`: the tight span a window can change, and the fixes deciding it, give the
same crossings in that span as the whole track does — and nothing outside it changes."""

from __future__ import annotations

import random

import pytest

from processor.core.position import Position
from processor.domain.timing import DEFAULT_SETTINGS, recompute_window
from processor.domain.windows import timing_scope
from processor.domain_runner.notices import Window
from processor.tools.simulator.event import load_event
from tests.unit.domain.accuracy import index_of, simulate

INDEX = index_of(load_event())
RUN = simulate(load_event(), noise_m=2.0)
TRACKS = {d: sorted(f, key=lambda p: p.ts_ms) for d, f in RUN.fixes.items()}


def _windows(track: list[Position], rng: random.Random) -> list[tuple[int, int]]:
    """Windows of 1 to 30 fixes anywhere on the track (in order, or re-cutting history)."""
    found = []
    for _ in range(60):
        i = rng.randrange(0, len(track) - 1)
        j = min(len(track) - 1, i + rng.randrange(0, 30))
        found.append((i, j))
    return found


@pytest.mark.parametrize("device", sorted(TRACKS)[:3])
def test_the_tight_scope_reproduces_the_whole_track(device: str) -> None:
    rng = random.Random(device)
    track = TRACKS[device]
    everything = recompute_window(track, INDEX)
    checked = 0
    for i, j in _windows(track, rng):
        window = Window(device, track[i].ts_ms, track[j].ts_ms)
        # Before the window arrived: the track without it (what the stage had stored).
        without = track[:i] + track[j + 1 :]
        before = recompute_window(without, INDEX)
        read_from = track[i].ts_ms - 300_000
        fixes = [p for p in track if p.ts_ms >= read_from]
        (lo, hi), scoped = timing_scope(fixes, window, (0, 2**62), read_from, DEFAULT_SETTINGS)
        if (lo, hi) == (0, 2**62):
            continue  # fell back to the general bound (no fix far enough before)
        checked += 1
        inside = [c for c in everything if lo <= c.crossed_at_ms < hi]
        assert recompute_window(scoped, INDEX, window=(lo, hi)) == inside
        # Outside the span, the window changed nothing.
        assert [c for c in before if not lo <= c.crossed_at_ms < hi] == [
            c for c in everything if not lo <= c.crossed_at_ms < hi
        ]
    assert checked > 40

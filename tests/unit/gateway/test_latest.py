"""The latest fix per device: bounded, only forward in time."""

from __future__ import annotations

from processor.core.position import Position
from processor.gateway.latest import LatestFixes


def fix(device: str, ts: int, valid: bool = True) -> Position:
    return Position(device, ts, ts, 45.0, 7.0, valid, f"{ts}-0")


def test_older_fix_does_not_replace_newer() -> None:
    latest = LatestFixes(10)
    assert latest.offer(fix("a", 2))
    assert not latest.offer(fix("a", 1))
    assert not latest.offer(fix("a", 2))
    held = latest.get("a")
    assert held is not None
    assert held.ts_ms == 2


def test_fix_without_gps_is_not_a_position() -> None:
    latest = LatestFixes(10)
    assert not latest.offer(fix("a", 1, valid=False))
    assert len(latest) == 0


def test_bounded_least_recently_updated_evicted() -> None:
    latest = LatestFixes(2)
    latest.offer(fix("a", 1))
    latest.offer(fix("b", 1))
    latest.offer(fix("a", 2))
    latest.offer(fix("c", 1))
    assert len(latest) == 2
    assert latest.get("b") is None
    assert latest.evicted == 1

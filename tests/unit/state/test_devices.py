"""Bounded device state: duplicates, late records, derived values, limits."""

from __future__ import annotations

import pytest

from processor.core.position import Position
from processor.state.devices import DeviceState, RecentKeys, fix_distance_m, haversine_m


def pos(device: str, ts_ms: int, lat: float = 54.0, lon: float = 25.0, sats: int = 9) -> Position:
    return Position(
        device_id=device,
        ts_ms=ts_ms,
        received_at_ms=ts_ms,
        latitude=lat,
        longitude=lon,
        fix_valid=sats != 0,
        stream_id=f"{ts_ms}-0",
        satellites=sats,
    )


def test_exact_duplicate_is_flagged_and_leaves_state_unchanged() -> None:
    state = DeviceState(10, 100)
    assert not state.observe(pos("A", 1000)).duplicate
    assert state.observe(pos("A", 1000)).duplicate
    assert not state.observe(pos("B", 1000)).duplicate


def test_late_record_is_flagged_and_does_not_move_the_newest_time() -> None:
    state = DeviceState(10, 100)
    state.observe(pos("A", 5000))
    late = state.observe(pos("A", 3000))
    assert late.late
    assert not state.observe(pos("A", 6000)).late


def test_distance_and_implied_speed_from_previous_valid_fix() -> None:
    state = DeviceState(10, 100)
    state.observe(pos("A", 0, lat=54.0, lon=25.0))
    state.observe(pos("A", 500, lat=0.0, lon=0.0, sats=0))  # no fix: ignored for distance
    obs = state.observe(pos("A", 2000, lat=54.0 + 0.001, lon=25.0))
    assert obs.distance_m == pytest.approx(111.2, rel=0.01)
    assert obs.implied_speed_kmh == pytest.approx(111.2 / 2 * 3.6, rel=0.01)


def test_device_state_is_bounded_and_evicts_least_recently_seen() -> None:
    state = DeviceState(max_devices=3, dedupe_window=100)
    for i, device in enumerate(["A", "B", "C"]):
        state.observe(pos(device, 1000 + i))
    state.observe(pos("A", 5000))  # A is now the most recent
    state.observe(pos("D", 5000))  # evicts B
    assert len(state) == 3
    assert state.evictions == 1
    assert state.observe(pos("B", 9000)).distance_m is None  # B was forgotten


def test_recent_keys_are_bounded() -> None:
    keys = RecentKeys(capacity=100)
    for i in range(10_000):
        keys.seen_or_add(("A", i))
    assert len(keys) <= 100
    assert keys.seen_or_add(("A", 9_999))
    assert not keys.seen_or_add(("A", 0))


def test_forget_lets_a_corrected_resend_through() -> None:
    state = DeviceState(10, 100)
    p = pos("A", 1000)
    state.observe(p)
    state.forget(p)
    assert not state.observe(p).duplicate


@pytest.mark.parametrize(
    ("a", "b"),
    [((54.0, 25.0), (54.01, 25.01)), ((0.0, 0.0), (0.3, -0.4)), ((-33.9, 151.2), (-33.9, 151.25))],
)
def test_fast_distance_agrees_with_haversine_for_short_hops(
    a: tuple[float, float], b: tuple[float, float]
) -> None:
    assert fix_distance_m(*a, *b) == pytest.approx(haversine_m(*a, *b), rel=1e-3)


def test_long_jumps_use_haversine() -> None:
    assert fix_distance_m(0.0, 179.9, 0.0, -179.9) == pytest.approx(
        haversine_m(0.0, 179.9, 0.0, -179.9)
    )

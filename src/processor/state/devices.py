"""Bounded per-device memory: what the processor knows about a tracker between records.

Two LRUs, both capped: the last fix of each device (for the late flag and the distance
and implied speed from the previous fix), and the recently seen `(device_id, ts)` keys
(so a re-sent packet is dropped before it reaches the database). Neither is needed for
correctness — the database key is — only for cost and for the derived values.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

from processor.core.position import Position

EARTH_RADIUS_M = 6_371_008.8


@dataclass(slots=True)
class LastFix:
    """Newest record time of a device, and its newest valid fix (`fix_ts_ms` -1: none yet)."""

    newest_ts_ms: int
    fix_ts_ms: int
    latitude: float
    longitude: float


@dataclass(frozen=True, slots=True)
class Observation:
    """What the state says about one position."""

    duplicate: bool
    late: bool = False
    distance_m: float | None = None
    implied_speed_kmh: float | None = None


DUPLICATE = Observation(duplicate=True)
FIRST = Observation(duplicate=False)
LATE = Observation(duplicate=False, late=True)


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres."""
    p1 = math.radians(lat1)
    p2 = math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


_RAD = math.pi / 180.0


def fix_distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Distance between consecutive fixes: equirectangular (within 0.1 % below 50 km),
    falling back to haversine for longer jumps or across the antimeridian."""
    dlon = lon2 - lon1
    dlat = lat2 - lat1
    if -0.5 < dlat < 0.5 and -0.5 < dlon < 0.5:
        x = dlon * _RAD * math.cos((lat1 + lat2) * 0.5 * _RAD)
        y = dlat * _RAD
        return EARTH_RADIUS_M * math.sqrt(x * x + y * y)
    return haversine_m(lat1, lon1, lat2, lon2)


class RecentKeys:
    """The last `capacity`-ish keys seen, in two generations of sets.

    Cheaper than an LRU (no per-hit reordering): a key is remembered for at least
    `capacity / 2` and at most `capacity` insertions after it was last added.
    """

    def __init__(self, capacity: int) -> None:
        self.generation = max(1, capacity // 2)
        self.current: set[tuple[str, int]] = set()
        self.previous: set[tuple[str, int]] = set()

    def __len__(self) -> int:
        return len(self.current) + len(self.previous)

    def seen_or_add(self, key: tuple[str, int]) -> bool:
        """True if the key was seen recently; otherwise remember it."""
        if key in self.current or key in self.previous:
            return True
        current = self.current
        current.add(key)
        if len(current) >= self.generation:
            self.previous = current
            self.current = set()
        return False

    def discard(self, key: tuple[str, int]) -> None:
        self.current.discard(key)
        self.previous.discard(key)


class DeviceState:
    """Last fix per device (LRU, `max_devices`) and recent keys (`dedupe_window`)."""

    def __init__(self, max_devices: int, dedupe_window: int) -> None:
        self.max_devices = max_devices
        self.dedupe_window = dedupe_window
        self._last: OrderedDict[str, LastFix] = OrderedDict()
        self._recent = RecentKeys(dedupe_window)
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._last)

    def observe(self, p: Position) -> Observation:
        """Record the position and classify it; a duplicate leaves the state unchanged."""
        if self._recent.seen_or_add((p.device_id, p.ts_ms)):
            return DUPLICATE

        last = self._last.get(p.device_id)
        if last is None:
            fix_ts = p.ts_ms if p.fix_valid else -1
            self._last[p.device_id] = LastFix(p.ts_ms, fix_ts, p.latitude, p.longitude)
            if len(self._last) > self.max_devices:
                self._last.popitem(last=False)
                self.evictions += 1
            return FIRST
        self._last.move_to_end(p.device_id)
        if p.ts_ms < last.newest_ts_ms:
            return LATE
        last.newest_ts_ms = p.ts_ms
        if not p.fix_valid:
            return FIRST
        observation = FIRST
        if last.fix_ts_ms >= 0 and p.ts_ms > last.fix_ts_ms:
            distance = fix_distance_m(last.latitude, last.longitude, p.latitude, p.longitude)
            speed = distance / ((p.ts_ms - last.fix_ts_ms) / 1000) * 3.6
            observation = Observation(False, False, distance, speed)
        last.fix_ts_ms = p.ts_ms
        last.latitude = p.latitude
        last.longitude = p.longitude
        return observation

    def forget(self, p: Position) -> None:
        """Drop the key of a position the database refused, so a corrected resend is stored."""
        self._recent.discard((p.device_id, p.ts_ms))

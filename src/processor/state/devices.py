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


class DeviceState:
    """Last fix per device (LRU, `max_devices`) and recent keys (LRU, `dedupe_window`)."""

    def __init__(self, max_devices: int, dedupe_window: int) -> None:
        self.max_devices = max_devices
        self.dedupe_window = dedupe_window
        self._last: OrderedDict[str, LastFix] = OrderedDict()
        self._recent: OrderedDict[tuple[str, int], None] = OrderedDict()
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._last)

    def observe(self, p: Position) -> Observation:
        """Record the position and classify it; a duplicate leaves the state unchanged."""
        key = (p.device_id, p.ts_ms)
        recent = self._recent
        if key in recent:
            recent.move_to_end(key)
            return DUPLICATE
        recent[key] = None
        if len(recent) > self.dedupe_window:
            recent.popitem(last=False)

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
            distance = haversine_m(last.latitude, last.longitude, p.latitude, p.longitude)
            speed = distance / ((p.ts_ms - last.fix_ts_ms) / 1000) * 3.6
            observation = Observation(False, False, distance, speed)
        last.fix_ts_ms = p.ts_ms
        last.latitude = p.latitude
        last.longitude = p.longitude
        return observation

    def forget(self, p: Position) -> None:
        """Drop the key of a position the database refused, so a corrected resend is stored."""
        self._recent.pop((p.device_id, p.ts_ms), None)

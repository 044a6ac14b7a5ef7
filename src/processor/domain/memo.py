"""A bounded memo for pure geometry: the same inputs always give the same bits.

Consecutive windows of a device overlap (each re-reads ~45 s of track for a few new
seconds), so the same fixes are projected and the same segments tested against the
geofences again and again. Remembering the answers of pure functions changes no result,
only the cost. Bounded the cheap way: when full it forgets everything (the next batch's
working set refills it at once), with no per-hit bookkeeping as an LRU would need.
"""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Memo(Generic[K, V]):
    __slots__ = ("_found", "capacity")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._found: dict[K, V] = {}

    def __len__(self) -> int:
        return len(self._found)

    def get(self, key: K) -> V | None:
        return self._found.get(key)

    def put(self, key: K, value: V) -> None:
        if len(self._found) >= self.capacity:
            self._found.clear()
        self._found[key] = value

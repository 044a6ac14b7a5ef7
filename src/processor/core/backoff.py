"""Exponential backoff with full jitter, capped: the retry pace for transient failures."""

from __future__ import annotations

import random


class Backoff:
    """Delays of min(cap, initial * 2**attempt), jittered so instances do not retry in step."""

    def __init__(self, initial_s: float, cap_s: float) -> None:
        self.initial = initial_s
        self.cap = cap_s
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.initial * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0

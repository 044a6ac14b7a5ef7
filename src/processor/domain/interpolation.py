"""When, between two fixes, the vehicle was at a given point of the segment.

Both models use only the two fixes that bracket the point (DESIGN: the crossing time
is interpolated between the fixes that bracket the gate):

- `linear`: constant speed — time fraction = distance fraction f along the chord.
- `speed`: constant acceleration between the speeds v0, v1 the tracker reports at
  the two fixes (GNSS Doppler speeds: far less noisy than positions). The distance
  covered is then D = (v0 + v1)/2 · Δt, and the along-track distance from the first
  fix to the point is estimated as the mean of two anchored estimates — f·L measured
  from the first fix and D − (1 − f)·L measured back from the second — i.e.
  X = f·L + (D − L)/2, which halves the variance that position noise of the nearer
  fix puts into f·L. The time then solves X = v0·τ + ½·a·τ² with a = (v1 − v0)/Δt;
  as v² is linear in distance under constant acceleration, with g = X / D:

      τ / Δt = g·(v0 + v1) / (v0 + √((1 − g)·v0² + g·v1²))

  which is exact for a start from standstill (v0 = 0: τ/Δt = √g), where the linear
  model is worst, and equals g when v0 = v1. X is clamped to [0, D], so the time
  stays between the fixes.

  It falls back to `linear` when a speed is missing, both are zero, or D and the
  chord L disagree by more than `SPEED_TOLERANCE_M` + `SPEED_TOLERANCE_RATIO`·L:
  speeds that inconsistent with the positions (a stale speed, a stop inside the
  segment, a position jump) are not to be trusted for timing.

Measured on the simulator's exact trajectories (tests/unit/domain/accuracy.py), the
`speed` model beats `linear` without noise (p95 ≈ 2 ms vs ≈ 42 ms: linear ignores
the acceleration off the start line) and with noise (σ = 1 m: p95 ≈ 0.07 s vs
0.10 s), hence the default.
"""

from __future__ import annotations

import math
from typing import Final, Literal

Method = Literal["linear", "speed"]
DEFAULT_METHOD: Final[Method] = "speed"
# Speeds are trusted while |D − L| ≤ SPEED_TOLERANCE_M + SPEED_TOLERANCE_RATIO · L;
# the slack covers GPS noise of a few metres on both fixes at any speed.
SPEED_TOLERANCE_M: Final = 5.0
SPEED_TOLERANCE_RATIO: Final = 0.5
_KMH: Final = 1.0 / 3.6


def time_fraction(
    fraction: float,
    method: Method,
    v0_kmh: float | None,
    v1_kmh: float | None,
    chord_m: float,
    dt_s: float,
) -> tuple[float, Method]:
    """(time fraction in [0, 1], model actually used) at `fraction` of the chord."""
    f = min(1.0, max(0.0, fraction))
    if method == "linear" or v0_kmh is None or v1_kmh is None:
        return f, "linear"
    if not (math.isfinite(v0_kmh) and math.isfinite(v1_kmh)):
        return f, "linear"
    v0, v1 = max(0.0, v0_kmh * _KMH), max(0.0, v1_kmh * _KMH)
    covered = (v0 + v1) / 2.0 * dt_s
    if not covered > 0.0:
        return f, "linear"
    if abs(covered - chord_m) > SPEED_TOLERANCE_M + SPEED_TOLERANCE_RATIO * chord_m:
        return f, "linear"
    along = f * chord_m + (covered - chord_m) / 2.0
    g = min(1.0, max(0.0, along / covered))
    if v0 == v1:
        return g, "speed"
    denominator = v0 + math.sqrt((1.0 - g) * v0 * v0 + g * v1 * v1)
    if denominator <= 0.0:  # g = 0 from standstill
        return 0.0, "speed"
    return min(1.0, max(0.0, g * (v0 + v1) / denominator)), "speed"

"""When, between two fixes, the vehicle was at a given point of the segment.

Every model uses only the two fixes that bracket the point (DESIGN: the crossing time
is interpolated between the fixes that bracket the gate). The engine finds the point
on the chord between the fixes, at a fraction f of its length L.

- `linear`: constant speed along the chord — time fraction = f.
- `speed`: constant acceleration along the chord, between the speeds v0, v1 the
  tracker reports at the two fixes (GNSS Doppler speeds: far less noisy than
  positions). The distance covered is then D = (v0 + v1)/2 · Δt. The along-track
  distance from the first fix to the point has two anchored estimates, f·L measured
  from the first fix and D − (1 − f)·L measured back from the second; they are
  weighted (3 − 2f)/4 and (1 + 2f)/4, i.e. X = f·L + (1 + 2f)/4 · (D − L). Position
  noise of the two fixes is still averaged (variance at most 5/8 of one fix's, 1/2
  with equal weights), while a speed profile that is not one constant acceleration
  (a kart braking into a hairpin, then turning at constant speed, within a second)
  moves a point near a fix by a quarter of the gap D − L, not a half (equal weights:
  p95 0.017 s against 0.011 s on the kart course's straights without noise). The time then
  solves X = v0·τ + ½·a·τ² with a = (v1 − v0)/Δt; as v² is linear in distance under
  constant acceleration, with g = X / D:

      τ / Δt = g·(v0 + v1) / (v0 + √((1 − g)·v0² + g·v1²))

  which is exact for a start from standstill (v0 = 0: τ/Δt = √g), where the linear
  model is worst, and equals g when v0 = v1. X is clamped to [0, D], so the time
  stays between the fixes.
- `arc`: the same constant acceleration, along a circular arc instead of the chord.
  In a bend the chord is shorter than the road driven, while the speeds measure the
  road: the `speed` model then reads the gap D − L as position noise and shares it
  between both ends, pulling the time towards the middle of the segment — worse
  than plain linear in a tight hairpin (as on real kart logs, 12–25 Hz thinned to
  1 Hz: p50 0.029 s against 0.012 s). The headings the tracker reports at the two
  fixes (also Doppler) give the turn Δ between them; a circle through both fixes
  turning by Δ has length P = L·(Δ/2)/sin(Δ/2), and a line across the road (a gate
  or a zone boundary: perpendicular to the road, i.e. radial) meeting the chord at f
  meets the arc at the arc fraction

      α = 1/2 + atan((2f − 1)·tan(Δ/2)) / Δ

  (α → f as Δ → 0). `arc` is `speed` with f·L → α·P and L → P: exact on a circle
  driven at constant acceleration.

`auto` (the default) chooses per crossing, and reports which model it used (the
timing record's evidence, `Crossing.method`): `speed` on a straight
(|Δ| < ARC_MIN_TURN_DEG, or no usable heading), `arc` in a bend or hairpin, `linear`
past ARC_MAX_TURN_DEG (the arc fraction is then so steep in f mid-chord that it
nearly triples position noise, and a turn near 180° is ambiguous). Every model falls
back to `linear` when a speed is missing, both are zero, or D and the path length P
disagree by more than `SPEED_TOLERANCE_M` + `SPEED_TOLERANCE_RATIO`·P: speeds that
inconsistent with the positions (a stale speed, a stop inside the segment, a
position jump) are not to be trusted for timing. Headings count only when both
speeds are at least HEADING_MIN_KMH (a GNSS heading at walking pace or standstill
is noise); without them `auto` is `speed`, as before headings were used.

Measured against the simulator's exact trajectories, 1 Hz, 20 devices, seed 1
(`.venv/bin/python -m tests.unit.domain.accuracy`): gate time errors p95 / max in
seconds, classed by the heading change between the bracketing fixes (straight < 5°
≤ bend < 45° ≤ hairpin), on the kart course (simulator/kart.py: 180° hairpins of
radius 4–12 m at 35–55 km/h, bends of 20–50 m, kart acceleration and braking):

    noise σ  geometry   n     linear          speed           auto
    0 m      straight   200   0.050 / 0.059   0.011 / 0.013   0.011 / 0.013
    0 m      bend       155   0.046 / 0.051   0.031 / 0.036   0.022 / 0.031
    0 m      hairpin    165   0.085 / 0.111   0.098 / 0.128   0.035 / 0.051
    1 m      straight   200   0.086 / 0.192   0.056 / 0.144   0.056 / 0.144
    1 m      bend       157   0.098 / 0.265   0.083 / 0.227   0.080 / 0.223
    1 m      hairpin    163   0.173 / 0.309   0.181 / 0.273   0.160 / 0.235

`auto` is never worse than `linear` there (tests/unit/domain/test_accuracy.py); at
σ = 3 m it still is on p95 (hairpin 0.351 against 0.382 s) but not on the single
worst hairpin crossing (0.559 against 0.545 s), and with other seeds the max at 1 m
can go either way by a few hundredths: it is one crossing's noise. On the sample
event (gates mid-straight, rally cars off a standing start) `auto` is `speed`: p95
0.002 s against 0.042 s for linear without noise, 0.067 s against 0.102 s at
σ = 1 m.
"""

from __future__ import annotations

import math
from typing import Final, Literal

Method = Literal["auto", "linear", "speed"]  # what to compute (TimingSettings.method)
Model = Literal["linear", "speed", "arc"]  # what was used (a crossing's evidence)
DEFAULT_METHOD: Final[Method] = "auto"
# Speeds are trusted while |D − P| ≤ SPEED_TOLERANCE_M + SPEED_TOLERANCE_RATIO · P
# (P: the chord, or the arc); the slack covers GPS noise of a few metres on both
# fixes at any speed.
SPEED_TOLERANCE_M: Final = 5.0
SPEED_TOLERANCE_RATIO: Final = 0.5
# `auto`: below this turn the arc is the chord (its length differs by < 0.01 %).
ARC_MIN_TURN_DEG: Final = 3.0
# `auto`: above this turn between two fixes, linear (see the module docstring).
ARC_MAX_TURN_DEG: Final = 150.0
# Headings of fixes slower than this are not used.
HEADING_MIN_KMH: Final = 5.0
_KMH: Final = 1.0 / 3.6


def time_fraction(
    fraction: float,
    method: Method,
    v0_kmh: float | None,
    v1_kmh: float | None,
    chord_m: float,
    dt_s: float,
    *,
    h0_deg: float | None = None,
    h1_deg: float | None = None,
) -> tuple[float, Model]:
    """(time fraction in [0, 1], model actually used) at `fraction` of the chord.

    `h0_deg`, `h1_deg`: the headings at the two fixes (degrees), used by `auto` only.
    """
    f = min(1.0, max(0.0, fraction))
    if method == "linear" or v0_kmh is None or v1_kmh is None:
        return f, "linear"
    if not (math.isfinite(v0_kmh) and math.isfinite(v1_kmh)):
        return f, "linear"
    v0, v1 = max(0.0, v0_kmh * _KMH), max(0.0, v1_kmh * _KMH)
    turn = 0.0
    if method == "auto" and min(v0_kmh, v1_kmh) >= HEADING_MIN_KMH:
        turn = abs(heading_change(h0_deg, h1_deg) or 0.0)
    if turn > ARC_MAX_TURN_DEG:
        return f, "linear"
    if turn >= ARC_MIN_TURN_DEG:
        u = _constant_acceleration(arc_fraction(f, turn), arc_length(chord_m, turn), v0, v1, dt_s)
        return (f, "linear") if u is None else (u, "arc")
    u = _constant_acceleration(f, chord_m, v0, v1, dt_s)
    return (f, "linear") if u is None else (u, "speed")


def heading_change(h0_deg: float | None, h1_deg: float | None) -> float | None:
    """Signed turn from h0 to h1 in degrees, in [−180, 180) (None if one is unknown)."""
    if h0_deg is None or h1_deg is None or not math.isfinite(h0_deg - h1_deg):
        return None
    return (h1_deg - h0_deg + 180.0) % 360.0 - 180.0


def arc_length(chord_m: float, turn_deg: float) -> float:
    """Length of a circular arc over `chord_m` whose tangent turns by `turn_deg`."""
    half = math.radians(abs(turn_deg)) / 2.0
    return chord_m if half < 1e-9 else chord_m * half / math.sin(half)


def arc_fraction(fraction: float, turn_deg: float) -> float:
    """Where, as a fraction of the arc, a radial line meeting the chord at `fraction`
    meets a circular arc turning by `turn_deg` (|turn| < 180°) over that chord."""
    turn = math.radians(abs(turn_deg))
    if turn < 1e-9:
        return fraction
    return 0.5 + math.atan((2.0 * fraction - 1.0) * math.tan(turn / 2.0)) / turn


def _constant_acceleration(
    fraction: float, path_m: float, v0: float, v1: float, dt_s: float
) -> float | None:
    """Time fraction of the point at `fraction` of a path of length `path_m` driven
    from v0 to v1 (m/s) at constant acceleration; None if the speeds don't fit it."""
    covered = (v0 + v1) / 2.0 * dt_s
    if not covered > 0.0:
        return None
    if abs(covered - path_m) > SPEED_TOLERANCE_M + SPEED_TOLERANCE_RATIO * path_m:
        return None
    along = fraction * path_m + (1.0 + 2.0 * fraction) / 4.0 * (covered - path_m)
    g = min(1.0, max(0.0, along / covered))
    if v0 == v1:
        return g
    denominator = v0 + math.sqrt((1.0 - g) * v0 * v0 + g * v1 * v1)
    if denominator <= 0.0:  # g = 0 from standstill
        return 0.0
    return min(1.0, max(0.0, g * (v0 + v1) / denominator))

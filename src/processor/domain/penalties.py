"""Time penalties from measured facts: speed-zone infringements and missed waypoints.

Pure functions (no I/O), so a penalty is a function of stored positions, geofences and
the event's rules (DESIGN rule 7), and every number it depends on is copied into its
`evidence` for the official who has to explain it to a competitor.

Speed in a zone (`measure_speed_zone`) is measured on the interpolated path between
the zone's entry and exit times, exactly, on a piecewise-linear speed profile:

- v(t) is linear between consecutive fixes' reported speeds (GNSS Doppler: far less
  noisy than positions). A fix without a usable speed takes the implied speed of its
  segments (chord length ÷ time; the mean of both when it has two) and is counted in
  `implied_speeds`. Negative speeds count as 0.
- The profile is clipped to [entry, exit]. At both ends it holds the speed of the
  nearest fix inside the zone (a fix outside says how fast the car went outside: a car
  braking into the zone would otherwise be measured above its speed at the line);
  with no fix inside, the speeds are interpolated between the fix before entry and the
  fix after exit. Other fixes passed in are dropped first and change nothing.
- Maximum, time above the threshold (roots of each linear piece), the longest
  continuous run above it and the metres gained over the limit (∫ max(0, v − limit)
  dt, a trapezoid or a triangle per piece) are exact for that profile. "Above" is
  strict: a car at exactly the threshold is not above it.
- Distance and average speed follow the path entry point → fixes inside → exit point,
  measured on a tangent plane (processor.domain.projection). The entry and exit points
  lie on their segments where the same linear speed profile puts the car. Both are
  evidence only: no penalty depends on them.
- No fix inside: one piece on the bracketing segment. Zero duration (entry = exit):
  the speed at that instant is the maximum and the average, everything else is 0.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Final

import msgspec

from processor.core.position import Position
from processor.domain.config import Geofence
from processor.domain.projection import XY, LocalProjection, centred_on
from processor.domain.rules import SpeedPenaltyRule, WaypointPenaltyRule
from processor.domain.timing import prepare_fixes

Evidence = dict[str, float | int | str | None]
_KMH_TO_MS: Final = 1.0 / 3.6
_STILL_KMH: Final = 1e-9
# Float slack when comparing a measured run with `min_duration_s` (a nanosecond), so
# the rounding of an exactly computed crossing time cannot flip a verdict.
_DURATION_SLACK_MS: Final = 1e-6


class ZoneSpeed(msgspec.Struct, frozen=True):
    """One passage through a speed zone, measured (times in ms since the epoch)."""

    entry_ms: int
    exit_ms: int
    limit_kmh: float
    threshold_kmh: float
    max_speed_kmh: float
    max_speed_at_ms: int
    time_over_ms: float
    longest_over_ms: float
    longest_over_from_ms: float | None
    metres_gained: float
    distance_m: float
    average_kmh: float
    fixes_inside: int
    implied_speeds: int
    max_gap_ms: int

    @property
    def duration_ms(self) -> int:
        return self.exit_ms - self.entry_ms


class SpeedPenalty(msgspec.Struct, frozen=True):
    amount_ms: int
    reason: str
    evidence: Evidence


class WaypointPenalty(msgspec.Struct, frozen=True):
    geofence_id: int
    waypoint_type: str | None
    amount_ms: int
    reason: str
    evidence: Evidence


def measure_speed_zone(
    fixes: Iterable[Position],
    entry_ms: int,
    exit_ms: int,
    limit_kmh: float,
    threshold_kmh: float,
    *,
    projection: LocalProjection | None = None,
) -> ZoneSpeed:
    """Speed facts of one passage through a zone (see the module docstring).

    `fixes`: the device's fixes from the one at or before `entry_ms` to the one at or
    after `exit_ms`, any order (invalid fixes are ignored, one kept per timestamp as
    timing does). `threshold_kmh`: limit + tolerance. `projection`: the event's frame
    for distances; by default a tangent plane centred on the fixes used.
    Raises ValueError when exit < entry or the fixes do not bracket [entry, exit].
    """
    if exit_ms < entry_ms:
        raise ValueError(f"zone exit {exit_ms} before entry {entry_ms}")
    if not (math.isfinite(limit_kmh) and limit_kmh > 0 and math.isfinite(threshold_kmh)):
        raise ValueError("the limit must be > 0 and the threshold finite")
    track = _bracket(prepare_fixes(fixes), entry_ms, exit_ms)
    frame = (
        projection
        if projection is not None
        else centred_on((p.longitude, p.latitude) for p in track)
    )
    path = _Path(track, frame)
    inside = [p.ts_ms for p in track if entry_ms < p.ts_ms < exit_ms]
    times = [entry_ms, *inside, exit_ms] if exit_ms > entry_ms else [entry_ms]
    knots = [(t, path.speed_at(t)) for t in times]
    if inside:
        # The boundaries hold the speed of the nearest fix inside, not a value borrowed
        # from a fix outside: a car braking hard into the zone reaches the limit at the
        # line, and interpolating from the faster fix before it would overstate its speed
        # in the zone (by a whole penalty band, measured on the simulator's speeders).
        stamps = {p.ts_ms for p in track}
        if entry_ms not in stamps:
            knots[0] = (entry_ms, path.speed_at(inside[0]))
        if exit_ms not in stamps:
            knots[-1] = (exit_ms, path.speed_at(inside[-1]))
    over = _over(knots, threshold_kmh)
    v_max, at_max = max((v, -t) for t, v in knots)
    excess = sum(_excess_kmh_ms(a, b, limit_kmh) for a, b in itertools.pairwise(knots))
    distance = sum(math.dist(a, b) for a, b in itertools.pairwise(map(path.point_at, times)))
    duration_s = (exit_ms - entry_ms) / 1000.0
    return ZoneSpeed(
        entry_ms=entry_ms,
        exit_ms=exit_ms,
        limit_kmh=limit_kmh,
        threshold_kmh=threshold_kmh,
        max_speed_kmh=v_max,
        max_speed_at_ms=-at_max,
        time_over_ms=over.total_ms,
        longest_over_ms=over.longest_ms,
        longest_over_from_ms=over.longest_from_ms,
        metres_gained=excess * _KMH_TO_MS / 1000.0,
        distance_m=distance,
        average_kmh=distance / duration_s / _KMH_TO_MS if duration_s > 0 else v_max,
        fixes_inside=len(inside),
        implied_speeds=path.implied,
        max_gap_ms=max((b.ts_ms - a.ts_ms for a, b in itertools.pairwise(track)), default=0),
    )


def speed_penalty(zone: ZoneSpeed, rule: SpeedPenaltyRule) -> SpeedPenalty | None:
    """The penalty for one measured passage, or None when there is no infringement.

    Infringement: the car was above limit + tolerance continuously for at least
    `min_duration_s` (the longest run counts, not the sum of short ones: rally-raid
    rules mean a sustained excess, and GPS speed noise around the threshold must not
    add up to one). A zero-length passage never infringes.
    `table`: the excess max speed − limit (measured from the limit: the tolerance only
    decides whether there is an infringement) picks the highest band whose `over_kmh`
    it reaches; below the first band there is no penalty.
    `formula`: metres gained over the limit ÷ the limit in m/s × `factor`.
    """
    expected = zone.limit_kmh + rule.tolerance_kmh
    if not math.isclose(zone.threshold_kmh, expected, rel_tol=1e-9, abs_tol=1e-9):
        raise ValueError(
            f"zone measured against {zone.threshold_kmh} km/h, rule says {expected} km/h"
        )
    min_ms = rule.min_duration_s * 1000.0
    if not (zone.longest_over_ms > 0 and zone.longest_over_ms >= min_ms - _DURATION_SLACK_MS):
        return None
    over_kmh = zone.max_speed_kmh - zone.limit_kmh
    evidence: Evidence = {
        "style": rule.style,
        "limit_kmh": zone.limit_kmh,
        "tolerance_kmh": rule.tolerance_kmh,
        "threshold_kmh": zone.threshold_kmh,
        "min_duration_s": rule.min_duration_s,
        "entry_ms": zone.entry_ms,
        "exit_ms": zone.exit_ms,
        "duration_ms": zone.duration_ms,
        "max_speed_kmh": zone.max_speed_kmh,
        "max_speed_at_ms": zone.max_speed_at_ms,
        "over_kmh": over_kmh,
        "time_over_ms": zone.time_over_ms,
        "longest_over_ms": zone.longest_over_ms,
        "longest_over_from_ms": zone.longest_over_from_ms,
        "metres_gained": zone.metres_gained,
        "distance_m": zone.distance_m,
        "average_kmh": zone.average_kmh,
        "fixes_inside": zone.fixes_inside,
        "implied_speeds": zone.implied_speeds,
        "max_gap_ms": zone.max_gap_ms,
    }
    facts = (
        f"max {zone.max_speed_kmh:.1f} km/h in a {zone.limit_kmh:g} km/h zone "
        f"({over_kmh:+.1f}), above {zone.threshold_kmh:g} km/h for "
        f"{zone.longest_over_ms / 1000:.1f} s in a row (≥ {rule.min_duration_s:g} s)"
    )
    if rule.style == "table":
        reached = [band for band in rule.bands if band.over_kmh <= over_kmh]
        if not reached:
            return None
        band = max(reached, key=lambda b: b.over_kmh)
        penalty_s = band.penalty_s
        evidence |= {"band_over_kmh": band.over_kmh, "band_penalty_s": band.penalty_s}
        how = f"band ≥ {band.over_kmh:g} km/h over → {penalty_s:g} s"
    else:
        limit_m_s = zone.limit_kmh * _KMH_TO_MS
        penalty_s = zone.metres_gained / limit_m_s * rule.factor
        evidence |= {
            "limit_m_s": limit_m_s,
            "factor": rule.factor,
            "formula": "metres_gained / limit_m_s * factor",
        }
        how = (
            f"{zone.metres_gained:.1f} m gained ÷ {limit_m_s:.2f} m/s × {rule.factor:g} "
            f"= {penalty_s:.1f} s"
        )
    amount_ms = _round_ms(penalty_s)
    evidence |= {"penalty_s": penalty_s, "amount_ms": amount_ms}
    return SpeedPenalty(amount_ms, f"speeding: {facts}; {how}", evidence)


def missed_waypoints(
    waypoints: Sequence[Geofence],
    visited: Collection[int],
    rule: WaypointPenaltyRule,
    types: Mapping[int, str | None] | None = None,
) -> list[WaypointPenalty]:
    """A penalty per waypoint geofence whose id is not in `visited`, by sequence.

    Geofences of other kinds are skipped, so a stage's whole layout can be passed.
    `types`: geofence id → waypoint type (WPV, WPM, …); ids not in it have no type and
    take the rule's default.
    """
    kinds = types or {}
    missed = sorted(
        (g for g in waypoints if g.kind == "waypoint" and g.id not in visited),
        key=lambda g: (g.sequence, g.id),
    )
    penalties = []
    for fence in missed:
        kind = kinds.get(fence.id)
        penalty_s = rule.penalty_s(kind)
        source = "by_type" if kind is not None and kind in rule.by_type else "default_s"
        evidence: Evidence = {
            "geofence_id": fence.id,
            "name": fence.name,
            "sequence": fence.sequence,
            "stage_id": fence.stage,
            "waypoint_type": kind,
            "radius_m": fence.radius_m,
            "rule": source,
            "penalty_s": penalty_s,
        }
        label = f"{kind} " if kind else ""
        reason = f"missed waypoint {label}{fence.name!r} (#{fence.sequence}): {penalty_s:g} s"
        penalties.append(WaypointPenalty(fence.id, kind, _round_ms(penalty_s), reason, evidence))
    return penalties


class _Over(msgspec.Struct, frozen=True):
    total_ms: float
    longest_ms: float
    longest_from_ms: float | None


def _over(knots: list[tuple[int, float]], threshold: float) -> _Over:
    """Time strictly above `threshold` on the linear pieces between knots: in all, and
    the longest continuous run (a run goes on across a knot above the threshold)."""
    total = longest = run = 0.0
    run_from: float | None = None
    longest_from: float | None = None
    for (t0, v0), (t1, v1) in itertools.pairwise(knots):
        dt = float(t1 - t0)
        if v0 > threshold and v1 > threshold:
            start, part = float(t0), dt
        elif v0 > threshold:  # falls through the threshold
            start, part = float(t0), min(dt, dt * (v0 - threshold) / (v0 - v1))
        elif v1 > threshold:  # rises through it
            part = min(dt, dt * (v1 - threshold) / (v1 - v0))
            start = t1 - part
        else:
            continue
        total += part
        if v0 > threshold and run_from is not None:
            run += part
        else:
            run_from, run = start, part
        if run > longest:
            longest, longest_from = run, run_from
        if not v1 > threshold:
            run_from = None
    return _Over(total, longest, longest_from)


def _excess_kmh_ms(a: tuple[int, float], b: tuple[int, float], limit: float) -> float:
    """∫ max(0, v − limit) dt over one linear piece, in km/h·ms."""
    dt = float(b[0] - a[0])
    e0, e1 = a[1] - limit, b[1] - limit
    if e0 >= 0 and e1 >= 0:
        return (e0 + e1) / 2.0 * dt
    if e0 <= 0 and e1 <= 0:
        return 0.0
    high, low = max(e0, e1), min(e0, e1)  # a triangle over the part above the limit
    return high * high * dt / (2.0 * (high - low))


class _Path:
    """Speed and position of the car at any time between the first and last fix."""

    def __init__(self, track: list[Position], frame: LocalProjection) -> None:
        self.times = [p.ts_ms for p in track]
        self.points = [frame.to_xy(p.longitude, p.latitude) for p in track]
        segment_kmh = [
            math.dist(a, b) / ((tb - ta) / 1000.0) / _KMH_TO_MS
            for (a, b), (ta, tb) in zip(
                itertools.pairwise(self.points), itertools.pairwise(self.times), strict=True
            )
        ]
        self.speeds: list[float] = []
        self.implied = 0
        for i, p in enumerate(track):
            if p.speed is not None and math.isfinite(p.speed):
                self.speeds.append(max(0.0, p.speed))
                continue
            around = segment_kmh[max(0, i - 1) : i + 1]
            self.speeds.append(sum(around) / len(around) if around else 0.0)
            self.implied += 1

    def _locate(self, t: int) -> tuple[int, float]:
        """(segment index, time fraction) of `t`; fraction 0 on a fix."""
        i = bisect.bisect_right(self.times, t) - 1
        if self.times[i] == t or i + 1 >= len(self.times):
            return i, 0.0
        return i, (t - self.times[i]) / (self.times[i + 1] - self.times[i])

    def speed_at(self, t: int) -> float:
        i, u = self._locate(t)
        if u == 0.0:
            return self.speeds[i]
        return self.speeds[i] + u * (self.speeds[i + 1] - self.speeds[i])

    def point_at(self, t: int) -> XY:
        """Where the linear speed profile puts the car on the chord at time `t`."""
        i, u = self._locate(t)
        if u == 0.0:
            return self.points[i]
        v0, v1 = self.speeds[i], self.speeds[i + 1]
        # Distance covered by time u over distance covered by the segment's end (at a
        # standstill, or speeds too small to divide by, in proportion to time).
        total = v0 + v1
        s = min(1.0, u * (2.0 * v0 + (v1 - v0) * u) / total) if total > _STILL_KMH else u
        (x0, y0), (x1, y1) = self.points[i], self.points[i + 1]
        return (x0 + s * (x1 - x0), y0 + s * (y1 - y0))


def _bracket(track: list[Position], entry_ms: int, exit_ms: int) -> list[Position]:
    """The fixes from the last at or before entry to the first at or after exit."""
    times = [p.ts_ms for p in track]
    first = bisect.bisect_right(times, entry_ms) - 1
    last = bisect.bisect_left(times, exit_ms)
    if first < 0 or last >= len(track):
        raise ValueError(f"fixes do not bracket the zone passage [{entry_ms}, {exit_ms}]")
    return track[first : last + 1]


def _round_ms(seconds: float) -> int:
    """Seconds to whole milliseconds, halves up (not to even: no surprise at .5 ms)."""
    return math.floor(seconds * 1000.0 + 0.5)

"""Crossings of one device: timed, direction-checked, debounced, with stable keys.

`recompute_window` is what the domain stage calls per device and time window
(DESIGN, domain consistency model). It is a pure function of the fixes it is given,
the geofence index and the settings; the order the fixes arrive in does not matter
(they are sorted, and duplicates of a timestamp resolved by value).

Locality, and what a window needs (`context_span`, `affected_span`):

- A crossing is computed from its segment's two fixes only, and only if they are at
  most `max_gap_ms` apart: a device quiet for an hour between stages must not be
  "interpolated" through the next stage's start line in reverse.
- Debounce looks at raw hits of the same geofence close in time, never at what was
  kept, so a decision depends on a bounded neighbourhood and not on the whole
  history: a gate crossing is a jitter echo when the same gate was crossed in an
  allowed direction less than `debounce_ms` earlier (the first valid crossing
  wins); a waypoint's closest approach loses to a closer one less than
  `debounce_ms` away; an isolated entry/exit pair of a zone less than
  `zone_debounce_ms` apart is a graze of the boundary and cancels out.
- Hence, with c = `TimingSettings.context_ms` (max(debounce, 2 × zone debounce) +
  max gap): crossings with `crossed_at_ms` in [a, b) are exactly reproduced from the
  valid fixes in `context_span(a, b)` = [a − c, b + c]; and fixes added or removed
  in [t0, t1] can change crossings only in `affected_span(t0, t1)` = [t0 − c,
  t1 + c]. Windows tile: the union of the results of adjacent windows equals the
  result of one pass, bit for bit. (Geometry alone needs just the fix before and
  after a window; the context is what debounce needs.)

Keys: a crossing is keyed by (device, geofence, the two bracketing fix timestamps,
ordinal of the hit on that segment). While a segment's fixes are unchanged its key
and record are unchanged; a late fix re-cuts exactly one segment, whose old key
disappears (its time lies inside the affected span, so the stage replaces it) and
whose two new segments carry new keys. A per-device running ordinal ("3rd crossing
of gate 7") would instead shift for every later crossing when an early one appears.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Literal, NamedTuple

import msgspec

from processor.core.position import Position
from processor.domain.config import GeofenceKind
from processor.domain.geofences import (
    GateDirection,
    GeofenceIndex,
    SegmentHit,
    Transition,
    path_hits,
)
from processor.domain.interpolation import DEFAULT_METHOD, Method, Model, time_fraction

Status = Literal["valid", "debounced", "wrong_direction"]
DEFAULT_DEBOUNCE_MS = 10_000
DEFAULT_ZONE_DEBOUNCE_MS = 3_000
DEFAULT_MAX_GAP_MS = 30_000


class TimingSettings(msgspec.Struct, frozen=True):
    """How crossings are timed and filtered (part of the configuration: results are a
    function of fixes, geofences and these)."""

    method: Method = DEFAULT_METHOD
    debounce_ms: int = DEFAULT_DEBOUNCE_MS
    zone_debounce_ms: int = DEFAULT_ZONE_DEBOUNCE_MS
    max_gap_ms: int = DEFAULT_MAX_GAP_MS

    def __post_init__(self) -> None:
        if self.debounce_ms < 0 or self.zone_debounce_ms < 0 or self.max_gap_ms <= 0:
            raise ValueError("debounce times must be ≥ 0 and max_gap_ms > 0")

    @property
    def context_ms(self) -> int:
        """How far from a crossing the fixes that decide it can be (each side)."""
        return max(self.debounce_ms, 2 * self.zone_debounce_ms) + self.max_gap_ms


DEFAULT_SETTINGS = TimingSettings()


class FixRef(msgspec.Struct, frozen=True):
    """A bracketing fix, as stored with a timing record."""

    ts_ms: int
    latitude: float
    longitude: float
    speed_kmh: float | None
    heading: float | None


class CrossingKey(NamedTuple):
    device_id: str
    geofence_id: int
    before_ts_ms: int
    after_ts_ms: int
    ordinal: int


class Crossing(msgspec.Struct, frozen=True):
    """A device meeting a geofence between two fixes.

    `transition`: `cross` (gate, with `direction`), `entry`/`exit` (zone), `closest`
    (waypoint: the closest approach, `distance_m` ≤ radius; `crossed_at_ms` is its
    time). `latitude`/`longitude` is the point on the segment (linear in degrees,
    exact to well under a millimetre over a segment). `method`: the interpolation model
    actually used for `crossed_at_ms` (`speed`, `arc` or `linear`: interpolation.py).
    """

    device_id: str
    geofence_id: int
    stage_id: int | None
    kind: GeofenceKind
    transition: Transition
    crossed_at_ms: int
    latitude: float
    longitude: float
    fraction: float
    before: FixRef
    after: FixRef
    method: Model
    ordinal: int = 0
    direction: GateDirection | None = None
    distance_m: float | None = None
    status: Status = "valid"

    @property
    def key(self) -> CrossingKey:
        return CrossingKey(
            self.device_id, self.geofence_id, self.before.ts_ms, self.after.ts_ms, self.ordinal
        )


def context_span(start_ms: int, end_ms: int, settings: TimingSettings) -> tuple[int, int]:
    """The fixes (inclusive ts range) that fully determine crossings in [start, end)."""
    return start_ms - settings.context_ms, end_ms + settings.context_ms


def affected_span(first_ms: int, last_ms: int, settings: TimingSettings) -> tuple[int, int]:
    """Crossings (half-open range of crossed_at) that fixes changed in [first, last] may
    change: the window the domain stage must recompute and replace."""
    return first_ms - settings.context_ms, last_ms + settings.context_ms + 1


def prepare_fixes(fixes: Iterable[Position]) -> list[Position]:
    """Valid fixes of one device, by time; one per timestamp, chosen by value (so the
    choice does not depend on arrival order)."""
    valid = sorted((p for p in fixes if p.fix_valid), key=_fix_order)
    devices = {p.device_id for p in valid}
    if len(devices) > 1:
        raise ValueError(f"fixes of several devices: {sorted(devices)[:3]}")
    kept: list[Position] = []
    for p in valid:
        if not kept or p.ts_ms != kept[-1].ts_ms:
            kept.append(p)
    return kept


def any_hits(
    fixes: Iterable[Position], index: GeofenceIndex, settings: TimingSettings = DEFAULT_SETTINGS
) -> bool:
    """Whether the segments between these fixes touch any geofence at all.

    The in-order fast path: when a device's newest fix f arrives after p1 (after p0),
    only the segment p1 → f is new and only p1's waypoint verdict becomes decidable;
    if `any_hits([p0, p1, f])` is False nothing in `affected_span(f, f)` can change
    (an appended fix only adds hits), so the stage writes nothing — one segment of
    work per fix. Otherwise it recomputes the affected span with its context.
    """
    track = prepare_fixes(fixes)
    if len(track) < 2:
        return False
    to_xy = index.projection.to_xy
    points = [to_xy(p.longitude, p.latitude) for p in track]
    gap = settings.max_gap_ms
    connected = [b.ts_ms - a.ts_ms <= gap for a, b in itertools.pairwise(track)]
    return bool(path_hits(points, connected, index))


def recompute_window(
    fixes: Iterable[Position],
    index: GeofenceIndex,
    *,
    window: tuple[int, int] | None = None,
    settings: TimingSettings = DEFAULT_SETTINGS,
    include_rejected: bool = False,
) -> list[Crossing]:
    """Crossings of one device's fixes, in time order.

    `fixes`: the device's positions around the window, any order; records without a
    valid fix are ignored. For exact results pass every valid fix in
    `context_span(*window)` (one pass over a whole track: `window=None`).
    `window`: keep crossings with `crossed_at_ms` in [start, end).
    `include_rejected`: also return wrong-direction and debounced hits (with their
    `status`) for audit; by default only valid crossings.
    """
    track = prepare_fixes(fixes)
    if len(track) < 2:
        return []
    to_xy = index.projection.to_xy
    points = [to_xy(p.longitude, p.latitude) for p in track]
    gap = settings.max_gap_ms
    connected = [b.ts_ms - a.ts_ms <= gap for a, b in itertools.pairwise(track)]
    raw = [
        _crossing(hit, track, points, index, settings.method)
        for hit in path_hits(points, connected, index)
    ]
    statuses = _statuses(raw, index, settings)
    found = []
    for crossing, status in zip(raw, statuses, strict=True):
        if status != "valid" and not include_rejected:
            continue
        if window is not None and not window[0] <= crossing.crossed_at_ms < window[1]:
            continue
        found.append(
            crossing if status == "valid" else msgspec.structs.replace(crossing, status=status)
        )
    found.sort(key=lambda c: (c.crossed_at_ms, c.geofence_id, c.before.ts_ms, c.ordinal))
    return found


def _crossing(
    hit: SegmentHit,
    track: list[Position],
    points: list[tuple[float, float]],
    index: GeofenceIndex,
    method: Method,
) -> Crossing:
    a, b = track[hit.segment], track[hit.segment + 1]
    p0, p1 = points[hit.segment], points[hit.segment + 1]
    fence = index.shapes[hit.shape].fence
    dt = b.ts_ms - a.ts_ms
    f = hit.fraction
    chord = math.dist(p0, p1)
    u, used = time_fraction(
        f, method, a.speed, b.speed, chord, dt / 1000.0, h0_deg=a.heading, h1_deg=b.heading
    )
    at_ms = a.ts_ms + u * dt
    return Crossing(
        device_id=a.device_id,
        geofence_id=fence.id,
        stage_id=fence.stage,
        kind=fence.kind,
        transition=hit.transition,
        crossed_at_ms=math.floor(at_ms + 0.5),
        latitude=a.latitude + f * (b.latitude - a.latitude),
        longitude=a.longitude + f * (b.longitude - a.longitude),
        fraction=f,
        before=_ref(a),
        after=_ref(b),
        method=used,
        ordinal=hit.ordinal,
        direction=hit.direction,
        distance_m=hit.distance_m,
    )


def _statuses(raw: list[Crossing], index: GeofenceIndex, settings: TimingSettings) -> list[Status]:
    """Direction and debounce for gates, graze removal for zones, best approach for
    waypoints. Each decision looks at raw hits of the same geofence close in time."""
    statuses: list[Status] = ["valid"] * len(raw)
    groups: dict[int, list[int]] = defaultdict(list)
    for i, c in enumerate(raw):
        groups[c.geofence_id].append(i)
    for fence_id, members in groups.items():
        fence = index.shapes[index.by_id[fence_id]].fence
        members.sort(key=lambda i: (raw[i].crossed_at_ms, raw[i].key))
        if fence.is_gate:
            _gate_statuses(raw, members, fence.direction, settings.debounce_ms, statuses)
        elif fence.kind == "waypoint":
            _waypoint_statuses(raw, members, settings.debounce_ms, statuses)
        else:
            _zone_statuses(raw, members, settings.zone_debounce_ms, statuses)
    return statuses


def _gate_statuses(
    raw: list[Crossing],
    members: list[int],
    direction: str | None,
    debounce_ms: int,
    statuses: list[Status],
) -> None:
    """Wrong-direction crossings are rejected; an allowed crossing less than
    `debounce_ms` after the previous allowed one (kept or not) is a jitter echo."""
    previous: int | None = None
    for i in members:
        if direction not in ("either", raw[i].direction):
            statuses[i] = "wrong_direction"
            continue
        t = raw[i].crossed_at_ms
        if previous is not None and t - previous < debounce_ms:
            statuses[i] = "debounced"
        previous = t


def _waypoint_statuses(
    raw: list[Crossing], members: list[int], debounce_ms: int, statuses: list[Status]
) -> None:
    """A closest approach loses to a closer one (ties: the earlier) less than
    `debounce_ms` away: GPS jitter makes several local minima on one pass."""
    ranks = {i: (raw[i].distance_m or 0.0, raw[i].crossed_at_ms, raw[i].key) for i in members}
    for i in members:
        t = raw[i].crossed_at_ms
        for j in members:
            if ranks[j] < ranks[i] and abs(raw[j].crossed_at_ms - t) < debounce_ms:
                statuses[i] = "debounced"
                break


def _zone_statuses(
    raw: list[Crossing], members: list[int], zone_debounce_ms: int, statuses: list[Status]
) -> None:
    """An isolated pair of transitions less than `zone_debounce_ms` apart (entry then
    exit: the path grazed a corner; exit then entry: it grazed the boundary from
    inside) cancels out. Isolated: no other transition of the zone within
    `zone_debounce_ms` before or after, so the rule never needs more than a
    bounded neighbourhood. Longer jitter bursts are left as they are."""
    times = [raw[i].crossed_at_ms for i in members]
    n = len(times)
    for k in range(n - 1):
        if times[k + 1] - times[k] >= zone_debounce_ms:
            continue
        if k > 0 and times[k] - times[k - 1] < zone_debounce_ms:
            continue
        if k + 2 < n and times[k + 2] - times[k + 1] < zone_debounce_ms:
            continue
        statuses[members[k]] = statuses[members[k + 1]] = "debounced"


def _ref(p: Position) -> FixRef:
    return FixRef(p.ts_ms, p.latitude, p.longitude, p.speed, p.heading)


def _fix_order(p: Position) -> tuple[int, float, float, float, float]:
    nan = -math.inf
    return (
        p.ts_ms,
        p.latitude,
        p.longitude,
        nan if p.speed is None else p.speed,
        nan if p.heading is None else p.heading,
    )

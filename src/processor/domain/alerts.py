"""Safety alerts of one device: stopped, signal lost, GPS jump, off route, panic.

Pure functions of the device's records, the spans in which its entry is on a running
stage (`ActiveSpan`, from the timing records), the event's `AlertRules` and the stage
routes (`RouteIndex`): no clock, no I/O. The order the records come in and duplicates
do not matter (they are sorted, one record per timestamp, chosen by value).

Each alert is an `AlertSpan` keyed by (entry, kind, `started_at_ms`): its start is a
record's timestamp (or an active span's start it is clipped to), so recomputing from
the same data always gives the same key.

Locality (what a recomputation must read), with L = `lookback_ms(rules)`:

- Every decision looks at a bounded neighbourhood. A *run* (stopped, off route) is a
  maximal sequence of consecutive valid fixes that each qualify, on one active span
  (invalid records in between are ignored). Whether a fix qualifies depends on the fix
  alone, or for a stopped fix without a speed on the fix before it, at most
  `stopped.after_s` earlier; whether it continues the run of the fix before it, on
  those two fixes. A signal loss is decided by two consecutive records, a GPS jump by
  two consecutive valid fixes, where a panic span starts by the panic records up to
  `panic.merge_s` earlier.
- Contract. When records at or after P change (added, removed or altered; an active
  span whose start or end moves counts as a change at the earlier of its old and new
  time), read every record from

      S = min(P, last record before P, last valid fix before P) − L   (`read_from_ms`)

  lowered to `started_at_ms − L` for every stored span that `may_change_from(P)`.
  The spans detected on those records that `may_change_from(P)` are exact: they
  replace the stored ones that may change; every other stored span stands
  (`merge_recomputed`). Why: a run still going at P was either an alert already (a
  stored span that may change: its start is read) or began less than `after_s`
  before the last valid fix preceding P (its first fix and the one that gives it a
  speed are read); a signal loss ending at or after P starts at the last record
  before P at the earliest; a panic span not stored yet starts at P at the earliest.
  A run or panic chain cut by the start of the range does appear in the result, with
  a later start, but it was settled before P, so `may_change_from(P)` drops it.
- In particular spans with `started_at_ms` ≥ P are the same whether detected on the
  whole history or on the records from S on (without the stored-span extension).

`detect_alerts` has no clock, so a signal loss still going at the end of the data is
not in its result: the wall-clock sweep asks `open_signal_lost`, which opens it under
the same `started_at_ms` the closed span gets once records fill the gap.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Literal, NamedTuple

import msgspec

from processor.core.position import Position
from processor.domain.config import Stage
from processor.domain.projection import WGS84_A, WGS84_E2, XY, LocalProjection, LonLat
from processor.domain.rules import (
    AlertRules,
    GpsJumpRule,
    OffRouteRule,
    PanicRule,
    SignalLostRule,
    StoppedRule,
)
from processor.domain.shapes import Box, BoxIndex, segment_box

AlertKind = Literal["stopped", "signal_lost", "gps_jump", "off_route", "panic"]
Severity = Literal["info", "warning", "critical"]
Detail = int | float | bool | str | None | list[str]

# Also the order of alerts that start at the same time: the most urgent first.
KINDS: tuple[AlertKind, ...] = ("panic", "stopped", "signal_lost", "off_route", "gps_jump")
_KIND_ORDER = {kind: i for i, kind in enumerate(KINDS)}


class ActiveSpan(msgspec.Struct, frozen=True):
    """The entry is on a running stage in [start_ms, end_ms) (end None: still on it)."""

    stage_id: int
    start_ms: int
    end_ms: int | None = None

    def contains(self, ts_ms: int) -> bool:
        return self.start_ms <= ts_ms and (self.end_ms is None or ts_ms < self.end_ms)


class AlertSpan(msgspec.Struct, frozen=True):
    """One alert: what, where (stage), when, how bad, and the evidence.

    `ended_at_ms` None: still open at the end of the data (panic spans always: an
    official closes them). `settled_after_ms`: no record later than this can change
    the span; None while any later record can (an open run). Store it with the alert:
    `may_change_from` on stored spans is how a recomputation knows what to replace.
    """

    kind: AlertKind
    stage_id: int | None
    started_at_ms: int
    ended_at_ms: int | None
    severity: Severity
    details: dict[str, Detail]
    settled_after_ms: int | None

    @property
    def ongoing(self) -> bool:
        return self.ended_at_ms is None

    def may_change_from(self, first_changed_ms: int) -> bool:
        """Whether records changed at or after `first_changed_ms` can alter this span."""
        return self.settled_after_ms is None or first_changed_ms <= self.settled_after_ms


def lookback_ms(rules: AlertRules) -> int:
    """How far before the last record and valid fix preceding a change to read (see
    the module docstring for the whole contract).

    The longest context a new span's start needs: a stop not alerted yet began less
    than `stopped.after_s` before the last fix, and its first fix may take its speed
    from one up to `stopped.after_s` earlier; an off-route run began less than
    `off_route.after_s` before; a panic span merges records `panic.merge_s` apart.
    """
    return max(
        2 * _ms(rules.stopped.after_s), _ms(rules.off_route.after_s), _ms(rules.panic.merge_s)
    )


def read_from_ms(
    first_changed_ms: int,
    last_record_before_ms: int | None,
    last_fix_before_ms: int | None,
    rules: AlertRules,
) -> int:
    """Where to start reading a device's records after a change at `first_changed_ms`.

    `last_record_before_ms` / `last_fix_before_ms`: timestamps of the device's last
    record / last valid fix strictly before the change (None if there is none). Also
    read from `started_at_ms − lookback_ms(rules)` of stored spans that may change.
    """
    times = [
        t for t in (first_changed_ms, last_record_before_ms, last_fix_before_ms) if t is not None
    ]
    return min(times) - lookback_ms(rules)


def merge_recomputed(
    stored: Iterable[AlertSpan], recomputed: Iterable[AlertSpan], first_changed_ms: int
) -> list[AlertSpan]:
    """The spans after a change at `first_changed_ms`: the stored ones it cannot alter,
    plus the recomputed ones it can (read as `read_from_ms` says)."""
    kept = [s for s in stored if not s.may_change_from(first_changed_ms)]
    kept += [s for s in recomputed if s.may_change_from(first_changed_ms)]
    return sorted(kept, key=_span_order)


# --- the track ------------------------------------------------------------------------


class Track:
    """One device's records, by time, one per timestamp, with the active span of each
    valid fix; built once and shared by the detectors."""

    __slots__ = ("_starts", "active", "fix_spans", "fixes", "records")

    def __init__(self, records: Iterable[Position], active: Sequence[ActiveSpan]) -> None:
        ordered = sorted(records, key=_record_order)
        devices = {p.device_id for p in ordered}
        if len(devices) > 1:
            raise ValueError(f"records of several devices: {sorted(devices)[:3]}")
        self.records: list[Position] = []
        for p in ordered:
            if not self.records or p.ts_ms != self.records[-1].ts_ms:
                self.records.append(p)
        self.fixes = [p for p in self.records if p.fix_valid]
        self.active = sorted(active, key=_active_order)
        self._starts = [s.start_ms for s in self.active]
        self.fix_spans = [self.span_at(p.ts_ms) for p in self.fixes]

    def span_at(self, ts_ms: int) -> int | None:
        """Index of the active span containing `ts_ms` (the latest-starting, should spans
        overlap), or None."""
        for i in range(bisect.bisect_right(self._starts, ts_ms) - 1, -1, -1):
            if self.active[i].contains(ts_ms):
                return i
        return None

    def stage_at(self, ts_ms: int) -> int | None:
        i = self.span_at(ts_ms)
        return None if i is None else self.active[i].stage_id


# --- stage routes ----------------------------------------------------------------------


class RouteIndex:
    """Stage routes projected into the event's frame, for distance-to-route queries.

    Built once per configuration from the stages (those without a route get no
    off-route detection). Distances are exact point-to-polyline distances computed by
    scalar code; the box index only picks the candidate segments.
    """

    __slots__ = ("_routes", "projection")

    def __init__(self, stages: Iterable[Stage], projection: LocalProjection) -> None:
        self.projection = projection
        self._routes: dict[int, _Route] = {}
        for stage in stages:
            if stage.route is not None and stage.route.coordinates:
                points = [projection.to_xy(lon, lat) for lon, lat in stage.route.coordinates]
                self._routes[stage.id] = _Route(points)

    def __contains__(self, stage_id: object) -> bool:
        return stage_id in self._routes

    def distances_m(self, stage_id: int, points: Sequence[LonLat], radius_m: float) -> list[float]:
        """Distance in metres from each (lon, lat) to the stage's route.

        `radius_m`: the first search radius (the off-route threshold: most points are
        settled by one vectorised query at it)."""
        route = self._routes[stage_id]
        to_xy = self.projection.to_xy
        return route.distances([to_xy(lon, lat) for lon, lat in points], radius_m)

    def near(self, stage_id: int, points: Sequence[LonLat], radius_m: float) -> list[bool]:
        """Whether each (lon, lat) is within `radius_m` of the stage's route: one box
        query, no search beyond the radius (the fast path's question)."""
        route = self._routes[stage_id]
        to_xy = self.projection.to_xy
        return route.near([to_xy(lon, lat) for lon, lat in points], radius_m)


class _Route:
    __slots__ = ("_index", "_segments")

    def near(self, points: Sequence[XY], radius_m: float) -> list[bool]:
        found = [False] * len(points)
        boxes: list[Box] = [
            (x - radius_m, y - radius_m, x + radius_m, y + radius_m) for x, y in points
        ]
        for q, s in self._index.query(boxes):
            if not found[q]:
                a, b = self._segments[s]
                found[q] = _segment_distance(points[q], a, b) <= radius_m
        return found

    def __init__(self, points: Sequence[XY]) -> None:
        if len(points) == 1:
            points = [points[0], points[0]]
        self._segments = list(itertools.pairwise(points))
        self._index = BoxIndex([segment_box(a, b) for a, b in self._segments])

    def distances(self, points: Sequence[XY], radius_m: float) -> list[float]:
        """Exact distances: a candidate at distance d ≤ r found by a box query of
        half-size r is the nearest (every segment within r meets the box); otherwise
        query again at d (some candidate was found) or at 2r (none)."""
        best = [math.inf] * len(points)
        radius = dict.fromkeys(range(len(points)), max(radius_m, 1.0))
        while radius:
            pending = sorted(radius)
            boxes: list[Box] = []
            for i in pending:
                (x, y), r = points[i], radius[i]
                boxes.append((x - r, y - r, x + r, y + r))
            found: dict[int, float] = {}
            for q, s in self._index.query(boxes):
                a, b = self._segments[s]
                d = _segment_distance(points[pending[q]], a, b)
                found[q] = min(found.get(q, math.inf), d)
            for q, i in enumerate(pending):
                if q not in found:
                    radius[i] *= 2.0
                elif found[q] <= radius[i]:
                    best[i] = found[q]
                    del radius[i]
                else:
                    radius[i] = found[q]
        return best


def _segment_distance(p: XY, a: XY, b: XY) -> float:
    dx, dy = b[0] - a[0], b[1] - a[1]
    length2 = dx * dx + dy * dy
    t = 0.0
    if length2 > 0.0:
        t = min(1.0, max(0.0, ((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / length2))
    return math.hypot(p[0] - (a[0] + t * dx), p[1] - (a[1] + t * dy))


# --- all detectors -----------------------------------------------------------------------


def detect_alerts(
    records: Iterable[Position],
    active: Sequence[ActiveSpan],
    rules: AlertRules,
    routes: RouteIndex | None = None,
) -> list[AlertSpan]:
    """Every alert of one device's records, by start (then kind, stage).

    `routes` None: no off-route detection (e.g. an event without routes).
    """
    track = Track(records, active)
    found = [
        *detect_stopped(track, rules.stopped),
        *detect_signal_lost(track, rules.signal_lost),
        *detect_gps_jumps(track, rules.gps_jump),
        *detect_panic(track, rules.panic),
    ]
    if routes is not None:
        found += detect_off_route(track, rules.off_route, routes)
    return sorted(found, key=_span_order)


# --- runs (stopped, off route) ----------------------------------------------------------


class _Run(NamedTuple):
    first: int  # index into track.fixes
    last: int
    close: int | None  # the fix that ended it, None if the data ends in it


def _runs(starts: Sequence[bool], continues: Sequence[bool]) -> list[_Run]:
    """Maximal runs: a fix continues the run of the fix before it (`continues`), else
    may start one (`starts`)."""
    runs: list[_Run] = []
    first: int | None = None
    for i, (start, cont) in enumerate(zip(starts, continues, strict=True)):
        if first is not None and cont:
            continue
        if first is not None:
            runs.append(_Run(first, i - 1, i))
            first = None
        if start:
            first = i
    if first is not None:
        runs.append(_Run(first, len(starts) - 1, None))
    return runs


def _run_end(track: Track, run: _Run) -> int | None:
    """The closing fix's time, clipped to the end of the run's active span; the span's
    end if the data ends in the run; None if both are open."""
    span_index = track.fix_spans[run.first]
    assert span_index is not None
    span_end = track.active[span_index].end_ms
    if run.close is None:
        return span_end
    close_ms = track.fixes[run.close].ts_ms
    return close_ms if span_end is None else min(close_ms, span_end)


def _first_reaching(track: Track, run: _Run, after_ms: int) -> int | None:
    """Time of the first fix of the run at least `after_ms` after its start."""
    start = track.fixes[run.first].ts_ms
    for i in range(run.first, run.last + 1):
        if track.fixes[i].ts_ms - start >= after_ms:
            return track.fixes[i].ts_ms
    return None


def detect_stopped(track: Track, rule: StoppedRule) -> list[AlertSpan]:
    """Valid fixes slower than the threshold on an active span for ≥ `after_s` (first
    to last slow fix): warning from the first slow fix, critical from `escalate_after_s`.

    Speed: the reported one; without it, implied from the previous valid fix if that
    is at most `after_s` earlier, else unknown (an average over longer says nothing
    about being stopped throughout), and a fix of unknown speed is not slow. Across a
    gap longer than `after_s` a stop goes on only if the car has not moved (implied
    speed over the gap under the threshold). So whether a fix is slow depends on it
    and the fix before it at most `after_s` earlier, never on a chain of fixes.
    """
    fixes, spans = track.fixes, track.fix_spans
    limit, gap_ms = rule.speed_below_kmh, _ms(rule.after_s)
    speeds: list[float | None] = []
    slow: list[bool] = []
    continues: list[bool] = []
    for i, f in enumerate(fixes):
        p = fixes[i - 1] if i else None
        dt = f.ts_ms - p.ts_ms if p is not None else None
        link = _kmh(p, f) if p is not None else None
        speed = f.speed
        if speed is None and dt is not None and dt <= gap_ms:
            speed = link
        speeds.append(speed)
        slow.append(spans[i] is not None and speed is not None and speed < limit)
        continues.append(
            slow[i]
            and i > 0
            and slow[i - 1]
            and spans[i - 1] == spans[i]
            and dt is not None
            and (dt <= gap_ms or (link is not None and link < limit))
        )
    after_ms, escalate_ms = _ms(rule.after_s), _ms(rule.escalate_after_s)
    found: list[AlertSpan] = []
    for run in _runs(slow, continues):
        alerted = _first_reaching(track, run, after_ms)
        if alerted is None:
            continue
        escalated = _first_reaching(track, run, escalate_ms)
        first, last = fixes[run.first], fixes[run.last]
        ended = _run_end(track, run)
        run_speeds = [s for s in speeds[run.first : run.last + 1] if s is not None]
        details: dict[str, Detail] = {
            "speed_below_kmh": limit,
            "after_s": rule.after_s,
            "escalate_after_s": rule.escalate_after_s,
            "duration_ms": last.ts_ms - first.ts_ms,
            "fixes": run.last - run.first + 1,
            "max_speed_kmh": round(max(run_speeds), 2),
            "alerted_at_ms": alerted,
            "escalated_at_ms": escalated,
            "last_slow_ms": last.ts_ms,
            "latitude": first.latitude,
            "longitude": first.longitude,
        }
        found.append(
            AlertSpan(
                kind="stopped",
                stage_id=track.stage_at(first.ts_ms),
                started_at_ms=first.ts_ms,
                ended_at_ms=ended,
                severity="critical" if escalated is not None else "warning",
                details=details,
                settled_after_ms=ended,
            )
        )
    return found


def detect_off_route(track: Track, rule: OffRouteRule, routes: RouteIndex) -> list[AlertSpan]:
    """Valid fixes farther than `distance_m` from the active stage's route for
    ≥ `after_s` (first to last far fix): a warning from the first far fix, ended by the
    first fix back within the distance. Stages without a route: never off route."""
    fixes, spans = track.fixes, track.fix_spans
    by_stage: dict[int, list[int]] = defaultdict(list)
    for i, span in enumerate(spans):
        if span is not None and track.active[span].stage_id in routes:
            by_stage[track.active[span].stage_id].append(i)
    distance: dict[int, float] = {}
    for stage_id, members in sorted(by_stage.items()):
        points = [(fixes[i].longitude, fixes[i].latitude) for i in members]
        measured = routes.distances_m(stage_id, points, rule.distance_m)
        distance.update(zip(members, measured, strict=True))
    far = [distance.get(i, 0.0) > rule.distance_m for i in range(len(fixes))]
    continues = [far[i] and i > 0 and spans[i - 1] == spans[i] for i in range(len(fixes))]
    found: list[AlertSpan] = []
    for run in _runs(far, continues):
        alerted = _first_reaching(track, run, _ms(rule.after_s))
        if alerted is None:
            continue
        first, last = fixes[run.first], fixes[run.last]
        worst = max(range(run.first, run.last + 1), key=lambda i: (distance[i], -i))
        ended = _run_end(track, run)
        details: dict[str, Detail] = {
            "distance_m": rule.distance_m,
            "after_s": rule.after_s,
            "duration_ms": last.ts_ms - first.ts_ms,
            "fixes": run.last - run.first + 1,
            "max_distance_m": round(distance[worst], 2),
            "max_distance_at_ms": fixes[worst].ts_ms,
            "alerted_at_ms": alerted,
            "last_far_ms": last.ts_ms,
            "latitude": first.latitude,
            "longitude": first.longitude,
        }
        found.append(
            AlertSpan(
                kind="off_route",
                stage_id=track.stage_at(first.ts_ms),
                started_at_ms=first.ts_ms,
                ended_at_ms=ended,
                severity="warning",
                details=details,
                settled_after_ms=ended,
            )
        )
    return found


# --- signal lost --------------------------------------------------------------------------


def detect_signal_lost(track: Track, rule: SignalLostRule) -> list[AlertSpan]:
    """Race control heard nothing from the device for more than `after_s` inside an
    active span, in either of two ways:

    - a gap: consecutive records (valid fix or not) more than `after_s` apart, counted
      on the part of the gap inside the span, [max(previous record, span start),
      min(next record, span end)];
    - a buffered upload: the tracker kept recording without network and uploaded its
      buffer later. The records leave no gap, but those made while it was blind arrived
      more than `after_s` late; the loss runs from the last record heard live (where the
      wall-clock sweep, `open_signal_lost`, started the same alert while it was going
      on) to the moment the buffer arrived, and `filled_by_upload` says the data gap
      was filled.

    Critical from `escalate_after_s`.
    """
    after_ms, escalate_ms = _ms(rule.after_s), _ms(rule.escalate_after_s)
    found: list[AlertSpan] = []

    def add(
        a: Position,
        end_ms: int,
        settled: int | None,
        details: dict[str, Detail],
        spans: Sequence[ActiveSpan] = track.active,
    ) -> None:
        for span in spans:
            start = max(a.ts_ms, span.start_ms)
            end = end_ms if span.end_ms is None else min(end_ms, span.end_ms)
            if end - start <= after_ms:
                continue
            found.append(
                AlertSpan(
                    kind="signal_lost",
                    stage_id=span.stage_id,
                    started_at_ms=start,
                    ended_at_ms=end,
                    severity="critical" if end - start >= escalate_ms else "warning",
                    details={
                        "after_s": rule.after_s,
                        "escalate_after_s": rule.escalate_after_s,
                        **details,
                        **_last_position(a),
                    },
                    settled_after_ms=settled,
                )
            )

    records = track.records
    for a, b in itertools.pairwise(records):
        if b.ts_ms - a.ts_ms <= after_ms:
            continue
        delay = b.received_at_ms - b.ts_ms
        add(
            a,
            b.ts_ms,
            b.ts_ms,
            {
                "gap_ms": b.ts_ms - a.ts_ms,
                "last_record_ms": a.ts_ms,
                "next_record_ms": b.ts_ms,
                "filled_by_upload": delay > after_ms,
                "upload_delay_ms": delay,
            },
        )
    blind = [r.received_at_ms - r.ts_ms > after_ms for r in records]
    i = 0
    while i < len(records):
        if not blind[i] or i == 0 or blind[i - 1]:
            i += 1
            continue
        j = i
        while j < len(records) and blind[j]:
            j += 1
        a, run = records[i - 1], records[i:j]
        heard = min(r.received_at_ms for r in run)
        # A gap before the run is a gap (above). A stage that started while the device
        # was already blind is left to the gap rule: the loss began before anything
        # here can say when, and a span must not depend on where a read begins.
        live_on = [s for s in track.active if s.contains(a.ts_ms)]
        if run[0].ts_ms - a.ts_ms <= after_ms and live_on:
            add(
                a,
                heard,
                max(records[j].ts_ms, heard) if j < len(records) else None,
                {
                    "last_record_ms": a.ts_ms,
                    "heard_again_ms": heard,
                    "filled_by_upload": True,
                    "records_recovered": len(run),
                    "upload_delay_ms": max(r.received_at_ms - r.ts_ms for r in run),
                },
                # Only the span it began in: one starting later, inside the blind run,
                # would start where a read begins, not where the loss did.
                live_on,
            )
        i = j
    return found


def open_signal_lost(
    last_record: Position | None,
    now_ms: int,
    active: Sequence[ActiveSpan],
    rules: AlertRules,
) -> AlertSpan | None:
    """The signal loss still going at `now_ms` (the wall-clock sweep), or None.

    `last_record`: the device's newest stored record. Open (ended None) when the entry
    is on a running stage whose part since the last record is longer than `after_s`;
    it starts where `detect_signal_lost` will start the closed span once a record ends
    the gap, so the same alert row is updated rather than duplicated.
    """
    if last_record is None:
        return None
    rule = rules.signal_lost
    after_ms, escalate_ms = _ms(rule.after_s), _ms(rule.escalate_after_s)
    for span in sorted(active, key=_active_order, reverse=True):
        if not span.contains(now_ms):
            continue
        start = max(last_record.ts_ms, span.start_ms)
        if now_ms - start <= after_ms:
            return None
        details: dict[str, Detail] = {
            "after_s": rule.after_s,
            "escalate_after_s": rule.escalate_after_s,
            "silent_ms": now_ms - last_record.ts_ms,
            "last_record_ms": last_record.ts_ms,
            **_last_position(last_record),
        }
        return AlertSpan(
            kind="signal_lost",
            stage_id=span.stage_id,
            started_at_ms=start,
            ended_at_ms=None,
            severity="critical" if now_ms - start >= escalate_ms else "warning",
            details=details,
            settled_after_ms=None,
        )
    return None


def _last_position(p: Position) -> dict[str, Detail]:
    if not p.fix_valid:
        return {"last_latitude": None, "last_longitude": None}
    return {"last_latitude": p.latitude, "last_longitude": p.longitude}


# --- GPS jump -----------------------------------------------------------------------------


class Jump(NamedTuple):
    distance_m: float
    implied_kmh: float


def jump_between(a: Position, b: Position, rule: GpsJumpRule) -> Jump | None:
    """Whether the step from valid fix `a` to the next valid fix `b` (later) is a GPS
    jump: at least `min_distance_m` long, implied speed above `max_speed_kmh`. The one
    test both `detect_gps_jumps` and the fast path (`domain.ordinary`) apply."""
    distance = _distance_m(a, b)
    if distance < rule.min_distance_m:
        return None
    speed = _kmh(a, b, distance)
    return Jump(distance, speed) if speed > rule.max_speed_kmh else None


def detect_gps_jumps(track: Track, rule: GpsJumpRule) -> list[AlertSpan]:
    """Consecutive valid fixes at least `min_distance_m` apart whose implied speed is
    above `max_speed_kmh` (`jump_between`): an instant (started = ended) warning at the
    later fix, anywhere (on a stage or not)."""
    found: list[AlertSpan] = []
    for a, b in itertools.pairwise(track.fixes):
        jump = jump_between(a, b, rule)
        if jump is None:
            continue
        distance, speed = jump
        details: dict[str, Detail] = {
            "max_speed_kmh": rule.max_speed_kmh,
            "min_distance_m": rule.min_distance_m,
            "distance_m": round(distance, 2),
            "dt_ms": b.ts_ms - a.ts_ms,
            "implied_speed_kmh": round(speed, 2),
            "from_ms": a.ts_ms,
            "from_latitude": a.latitude,
            "from_longitude": a.longitude,
            "latitude": b.latitude,
            "longitude": b.longitude,
        }
        found.append(
            AlertSpan(
                kind="gps_jump",
                stage_id=track.stage_at(b.ts_ms),
                started_at_ms=b.ts_ms,
                ended_at_ms=b.ts_ms,
                severity="warning",
                details=details,
                settled_after_ms=b.ts_ms,
            )
        )
    return found


# --- panic ----------------------------------------------------------------------------------


def panic_triggers(p: Position, rule: PanicRule) -> list[str]:
    """Why a record is a panic record (`priority:2`, `io:247`), empty if it is not.

    IO keys of the rule may be written `247` or `io247`; records carry decimal ids."""
    triggers = [f"priority:{p.priority}"] if p.priority in rule.priorities else []
    for key in rule.alarm_io:
        io_id = key.removeprefix("io")
        value = p.io.get(io_id)
        if value is not None and (any(value) if isinstance(value, bytes) else value != 0):
            triggers.append(f"io:{io_id}")
    return triggers


def detect_panic(track: Track, rule: PanicRule) -> list[AlertSpan]:
    """Panic records (any record, on a stage or not) at most `merge_s` apart form one
    critical span from the first; it stays open (an official closes it)."""
    merge_ms = _ms(rule.merge_s)
    chains: list[list[tuple[Position, list[str]]]] = []
    for p in track.records:
        triggers = panic_triggers(p, rule)
        if not triggers:
            continue
        if chains and p.ts_ms - chains[-1][-1][0].ts_ms <= merge_ms:
            chains[-1].append((p, triggers))
        else:
            chains.append([(p, triggers)])
    found: list[AlertSpan] = []
    for chain in chains:
        first, last = chain[0][0], chain[-1][0]
        located = [p for p, _ in chain if p.fix_valid]
        details: dict[str, Detail] = {
            "count": len(chain),
            "first_ms": first.ts_ms,
            "last_ms": last.ts_ms,
            "merge_s": rule.merge_s,
            "triggers": sorted({t for _, ts in chain for t in ts}),
            "latitude": located[-1].latitude if located else None,
            "longitude": located[-1].longitude if located else None,
        }
        found.append(
            AlertSpan(
                kind="panic",
                stage_id=track.stage_at(first.ts_ms),
                started_at_ms=first.ts_ms,
                ended_at_ms=None,
                severity="critical",
                details=details,
                settled_after_ms=last.ts_ms + merge_ms,
            )
        )
    return found


# --- helpers ----------------------------------------------------------------------------------


def _ms(seconds: float) -> int:
    return round(seconds * 1000.0)


def _distance_m(a: Position, b: Position) -> float:
    """Distance on the ellipsoid's local radii at the mean latitude: within 10⁻⁵ over
    the few kilometres a fix-to-fix step spans (longer: still plenty for km/h)."""
    mean = math.radians((a.latitude + b.latitude) / 2.0)
    sin_mean = math.sin(mean)
    w = math.sqrt(1.0 - WGS84_E2 * sin_mean * sin_mean)
    east = WGS84_A / w * math.cos(mean) * math.radians(b.longitude - a.longitude)
    north = WGS84_A * (1.0 - WGS84_E2) / (w * w * w) * math.radians(b.latitude - a.latitude)
    return math.hypot(east, north)


def _kmh(a: Position, b: Position, distance_m: float | None = None) -> float:
    """Implied speed from a to b (distinct timestamps: the track has one per ts);
    `distance_m`: a to b, if the caller has it already."""
    if distance_m is None:
        distance_m = _distance_m(a, b)
    return distance_m / ((b.ts_ms - a.ts_ms) / 1000.0) * 3.6


def _record_order(p: Position) -> tuple[int, bool, bytes]:
    """Time, then a valid fix before an invalid one, then the whole record by value:
    which duplicate of a timestamp is kept does not depend on arrival order."""
    return (p.ts_ms, not p.fix_valid, msgspec.json.encode(p, order="sorted"))


def _active_order(s: ActiveSpan) -> tuple[int, int, bool, int]:
    return (s.start_ms, s.stage_id, s.end_ms is None, s.end_ms or 0)


def _span_order(s: AlertSpan) -> tuple[int, int, int]:
    return (s.started_at_ms, _KIND_ORDER[s.kind], -1 if s.stage_id is None else s.stage_id)

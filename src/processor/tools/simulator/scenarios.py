"""Scripted race situations for one car on one stage, with their exact expected outcome.

A scenario changes what the car drives, never its fixes after the fact: a stop is a
dwell in the speed profile, speeding a raised cap over part of the speed zone, a
missed waypoint a detour of the route itself. The trajectory therefore stays physical
(continuous speed, the car's own acceleration and braking) and every expected figure
comes from the same closed forms as the ground truth. Offline changes only when the
fixes are sent.

    sim = Simulation(event, GeneratorConfig(devices=3, scenarios=(
        Scenario(entry=2, stage=1, action=Stop(fraction=0.5, duration_s=120)),)))
    facts = scenarios.expected(sim)  # one Facts per scenario, in order
"""

from __future__ import annotations

import itertools
import math
from bisect import bisect_left
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from processor.tools.simulator.course import Course, StageCourse, WaypointTable
from processor.tools.simulator.faults import OfflineOrder
from processor.tools.simulator.geo import XY
from processor.tools.simulator.schedule import DevicePlan, LegPlan
from processor.tools.simulator.trajectory import (
    CarModel,
    Dwell,
    Profile,
    Route,
    SpeedLimit,
    Trajectory,
)

if TYPE_CHECKING:
    from processor.tools.simulator.generator import Simulation

GATE_CLEARANCE_M = 1.0  # a stop this close to a gate would make its crossing time ambiguous
DETOUR_HALF_LENGTHS_M = (200.0, 300.0, 450.0, 650.0)
DETOUR_STEP_M = 10.0
DETOUR_MAX_TURN_DEG = 30.0
_PLATEAU_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class Stop:
    """Brake to a standstill at `fraction` of the route (or `at_m` along it), stand
    for `duration_s`, drive on. `threshold_kmh`: the 'slow' line the facts time."""

    duration_s: float = 120.0
    fraction: float | None = None
    at_m: float | None = None
    threshold_kmh: float = 5.0


@dataclass(frozen=True, slots=True)
class Speeding:
    """In speed zone `zone` (default: the stage's first), hold limit + `over_kmh` for
    exactly `duration_s`, its middle at `at` of the zone; elsewhere obey the limit."""

    over_kmh: float = 12.0
    duration_s: float = 8.0
    tolerance_kmh: float = 5.0
    zone: int | None = None
    at: float = 0.5


@dataclass(frozen=True, slots=True)
class MissWaypoint:
    """Detour past waypoint `geofence` (default: the stage's first) `margin_m` beyond
    its radius, smoothly, crossing every gate and zone boundary as before."""

    geofence: int | None = None
    margin_m: float = 30.0


@dataclass(frozen=True, slots=True)
class Offline:
    """Record but don't send from `before_finish_s` before the finish crossing (or
    `from_ms`) until `upload_after_finish_s` after it (or `upload_at_ms`); then send
    the buffer at once in `order`."""

    before_finish_s: float = 60.0
    upload_after_finish_s: float = 120.0
    order: OfflineOrder = "oldest-first"
    from_ms: int | None = None
    upload_at_ms: int | None = None

    def __post_init__(self) -> None:
        if self.order not in ("oldest-first", "newest-first"):
            raise ValueError("offline order must be oldest-first or newest-first")


Action = Stop | Speeding | MissWaypoint | Offline


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """`action` by one car on stage id `stage`: the entry with id `entry`, or the
    device with index `device` (extras join mid-route: what precedes is unseen)."""

    action: Action
    stage: int
    entry: int | None = None
    device: int | None = None


# --- expected facts -------------------------------------------------------------------


class Facts(msgspec.Struct, frozen=True, tag_field="scenario"):
    device_id: str
    entry: int | None
    stage: int
    leg: int


class GateShift(msgspec.Struct, frozen=True):
    geofence: int
    kind: str
    exact_ms: float
    unshifted_ms: float  # the same car without this stop


class StopFacts(Facts, frozen=True, tag="stop"):
    """Standstill [stopped_at_ms, moving_at_ms]; speed under threshold_kmh over
    [below_at_ms, above_at_ms]; `lost_s` against the same car not stopping."""

    s_m: float
    latitude: float
    longitude: float
    stopped_at_ms: float
    moving_at_ms: float
    duration_s: float
    threshold_kmh: float
    below_at_ms: float
    above_at_ms: float
    lost_s: float
    later_gates: list[GateShift]


class SpeedingFacts(Facts, frozen=True, tag="speeding"):
    """One visit of a speed zone; `gained_m` = ∫ max(0, v − limit) dt over it."""

    zone: int
    limit_kmh: float
    over_kmh: float
    tolerance_kmh: float
    entry_ms: float
    exit_ms: float
    plateau_from_ms: float
    plateau_to_ms: float
    max_speed_kmh: float
    above_limit_s: float
    above_tolerance_s: float
    gained_m: float


class MissFacts(Facts, frozen=True, tag="miss-waypoint"):
    """The route's closest approach to the waypoint (the whole stage) and the detour."""

    geofence: int
    radius_m: float
    distance_m: float
    closest_at_ms: float
    offset_m: float
    visited: bool


class OfflineFacts(Facts, frozen=True, tag="offline"):
    """Fixes with ts in [from_ms, upload_at_ms) are held, then sent from upload_at_ms
    (packets of OFFLINE_PACKET_RECORDS; the last at last_received_ms when none drop)."""

    from_ms: int
    upload_at_ms: int
    finish_ms: float
    order: str
    records: int
    first_ts_ms: int | None
    last_ts_ms: int | None
    last_received_ms: int | None


AnyFacts = StopFacts | SpeedingFacts | MissFacts | OfflineFacts


@dataclass(frozen=True, slots=True)
class Hold:
    """An Offline scenario in the generator's terms, for one device's leg."""

    from_ms: int
    upload_ms: int
    order: OfflineOrder


@dataclass(frozen=True, slots=True)
class _Shaped:
    limits: list[SpeedLimit]
    dwells: list[Dwell]
    offsets: dict[int, float]  # waypoint geofence → detour depth, metres


class Scripts:
    """The scenarios of one run, resolved to device indexes; shapes their legs."""

    def __init__(self, course: Course, scenarios: tuple[Scenario, ...], devices: int) -> None:
        self.course = course
        self.scenarios = scenarios
        self.targets = [_target(course, sc, devices) for sc in scenarios]
        self._by_leg: dict[tuple[int, int], list[Action]] = {}
        for sc, index in zip(scenarios, self.targets, strict=True):
            self._by_leg.setdefault((index, sc.stage), []).append(sc.action)
        self._shaped: dict[tuple[int, int], _Shaped] = {}

    def shape(
        self, index: int, usual: StageCourse, car: CarModel
    ) -> tuple[StageCourse, Profile] | None:
        """The course and profile a scripted leg drives (schedule.Shape)."""
        actions = self._by_leg.get((index, usual.stage.id), [])
        if not any(not isinstance(a, Offline) for a in actions):
            return None
        stage, offsets = usual, {}
        for action in actions:
            if isinstance(action, MissWaypoint):
                stage, fence, depth = _detour(self.course, stage, action)
                offsets[fence] = depth
        limits = stage.speed_limits(car)
        dwells = [Dwell(_stop_s(stage, a), a.duration_s) for a in actions if isinstance(a, Stop)]
        for action in actions:
            if isinstance(action, Speeding):
                limits = _speeding_limits(stage, car, limits, dwells, action)
        self._shaped[index, usual.stage.id] = _Shaped(limits, dwells, offsets)
        profile = Profile(stage.route, car, limits, dwells)
        for action in actions:
            if isinstance(action, Stop):  # fail now, not when the facts are asked for
                _stop_times(profile, _stop_s(stage, action), action.threshold_kmh / 3.6)
        return stage, profile

    def holds(self, plans: list[DevicePlan]) -> dict[tuple[int, int], Hold]:
        """(device index, leg) → its offline window, for the generator."""
        found: dict[tuple[int, int], Hold] = {}
        for sc, index in zip(self.scenarios, self.targets, strict=True):
            if isinstance(sc.action, Offline):
                leg = _leg(plans[index], sc.stage)
                found[index, leg.leg] = _hold(leg, sc.action)
        return found


def expected(sim: Simulation) -> list[AnyFacts]:
    """What each scenario of the run must produce, in the order they were given."""
    scripts = sim.scripts
    out: list[AnyFacts] = []
    for sc, index in zip(scripts.scenarios, scripts.targets, strict=True):
        plan = sim.plans[index]
        leg = _leg(plan, sc.stage)
        head: dict[str, Any] = {
            "device_id": plan.device_id,
            "entry": None if plan.entry is None else plan.entry.id,
            "stage": sc.stage,
            "leg": leg.leg,
        }
        action = sc.action
        if isinstance(action, Stop):
            shaped = scripts._shaped[index, sc.stage]
            out.append(_stop_facts(sim, plan, leg, action, shaped, head))
        elif isinstance(action, Speeding):
            out.append(_speeding_facts(leg, action, head))
        elif isinstance(action, MissWaypoint):
            offsets = scripts._shaped[index, sc.stage].offsets
            out.append(_miss_facts(leg, action, offsets, head))
        else:
            out.append(_offline_facts(sim, leg, action, head))
    return out


# --- resolution -----------------------------------------------------------------------


def _target(course: Course, sc: Scenario, devices: int) -> int:
    if (sc.entry is None) == (sc.device is None):
        raise ValueError("a scenario targets exactly one of entry or device")
    if sc.stage not in course.by_id:
        raise ValueError(f"scenario: no stage {sc.stage}")
    if sc.device is not None:
        index = sc.device
    else:
        ids = [e.id for e in course.event.entries_in_start_order()]
        if sc.entry not in ids:
            raise ValueError(f"scenario: no entry {sc.entry}")
        index = ids.index(sc.entry)
    if not 0 <= index < devices:
        raise ValueError(f"scenario: device {index} is not in a run of {devices} devices")
    return index


def _leg(plan: DevicePlan, stage_id: int) -> LegPlan:
    return next(leg for leg in plan.legs if leg.course.stage.id == stage_id)


def _between_gates(stage: StageCourse, s: float, what: str) -> None:
    first, last = stage.gates[0].s, stage.gates[-1].s
    if not first < s < last or any(abs(s - g.s) < GATE_CLEARANCE_M for g in stage.gates):
        raise ValueError(f"{what} at {s:.1f} m must lie between start and finish, off the gates")


# --- stop -----------------------------------------------------------------------------


def _stop_s(stage: StageCourse, stop: Stop) -> float:
    if (stop.fraction is None) == (stop.at_m is None):
        raise ValueError("a stop needs exactly one of fraction or at_m")
    if stop.duration_s <= 0.0 or stop.threshold_kmh <= 0.0:
        raise ValueError("a stop needs a positive duration and threshold")
    s = stop.at_m if stop.at_m is not None else (stop.fraction or 0.0) * stage.route.length
    _between_gates(stage, s, "a stop")
    return s


def _dwell_node(profile: Profile, s: float) -> int:
    """The first node of the dwell nearest arc length s."""
    pairs = [i for i in range(len(profile.a)) if profile.s[i + 1] == profile.s[i]]
    return min(pairs, key=lambda i: abs(profile.s[i] - s))


def _stop_facts(
    sim: Simulation,
    plan: DevicePlan,
    leg: LegPlan,
    stop: Stop,
    shaped: _Shaped,
    head: dict[str, Any],
) -> StopFacts:
    traj, stage = leg.trajectory, leg.course
    prof = traj.profile
    k, below, above = _stop_times(prof, _stop_s(stage, stop), stop.threshold_kmh / 3.6)
    s = prof.s[k]
    others = [d for d in shaped.dwells if abs(d.s - s) > 1e-6]
    base = Trajectory(Profile(stage.route, plan.car, shaped.limits, others), traj.t_go_ms)
    x, y, _ = stage.route.at(s)
    lon, lat = sim.course.projection.to_lonlat(x, y)
    return StopFacts(
        **head,
        s_m=s,
        latitude=lat,
        longitude=lon,
        stopped_at_ms=_abs(traj, prof.t[k]),
        moving_at_ms=_abs(traj, prof.t[k + 1]),
        duration_s=float(stop.duration_s),
        threshold_kmh=float(stop.threshold_kmh),
        below_at_ms=_abs(traj, below),
        above_at_ms=_abs(traj, above),
        lost_s=round(prof.duration - base.profile.duration, 7),
        later_gates=[
            GateShift(g.fence.id, g.fence.kind, _ms(traj.time_at(g.s)), _ms(base.time_at(g.s)))
            for g in stage.gates
            if g.s > s
        ],
    )


def _stop_times(prof: Profile, s: float, slow: float) -> tuple[int, float, float]:
    """(first node of the dwell, time the speed falls below `slow` before it, time it
    rises above `slow` after it), in profile seconds."""
    k = _dwell_node(prof, s)
    below = _passes(prof, range(k - 1, -1, -1), slow)
    return k, below, _passes(prof, range(k + 1, len(prof.a)), slow)


def _passes(prof: Profile, intervals: range, speed: float) -> float:
    """Profile time at which the speed passes `speed`, on the first of `intervals`
    (walking away from a standstill) that reaches it; v is linear in t on each."""
    for i in intervals:
        if max(prof.v[i], prof.v[i + 1]) >= speed > min(prof.v[i], prof.v[i + 1]):
            return prof.t[i] + (speed - prof.v[i]) / prof.a[i]
    raise ValueError(f"the car never reaches {speed * 3.6:g} km/h around the stop")


def _abs(traj: Trajectory, t_s: float) -> float:
    return _ms(traj.t_go_ms + 1000.0 * t_s)


def _ms(t_ms: float) -> float:
    return round(t_ms, 4)


# --- speeding -------------------------------------------------------------------------


def _zone(stage: StageCourse, zone_id: int | None) -> tuple[int, float, float, float]:
    """(geofence id, entry s, exit s, limit km/h) of the first visit of a speed zone."""
    entered: dict[int, float] = {}
    for hit in stage.zones:
        fence = hit.fence
        if fence.kind != "speed_zone" or fence.speed_limit_kmh is None:
            continue
        if zone_id is not None and fence.id != zone_id:
            continue
        if hit.entering:
            entered.setdefault(fence.id, hit.s)
        elif fence.id in entered:
            return fence.id, entered[fence.id], hit.s, fence.speed_limit_kmh
    raise ValueError(f"stage {stage.stage.id} has no speed zone {zone_id or ''}".rstrip())


def _speeding_limits(
    stage: StageCourse,
    car: CarModel,
    limits: list[SpeedLimit],
    dwells: list[Dwell],
    action: Speeding,
) -> list[SpeedLimit]:
    """The zone's limit split around a window where the cap is limit + over.

    The car leaves its zone speed at s_a at full acceleration and is back to it at s_b
    at full braking; p0 and p1, where the ramps reach the plateau speed, are limit
    boundaries too, so they are profile nodes and the plateau lasts exactly
    `duration_s`. The ramp speeds are read off the built profile until they agree.
    """
    if action.over_kmh <= 0.0 or action.duration_s <= 0.0:
        raise ValueError("speeding needs over_kmh > 0 and a positive duration")
    _, s_in, s_out, limit_kmh = _zone(stage, action.zone)
    limit = limit_kmh / 3.6
    fast = (limit_kmh + action.over_kmh) / 3.6
    keep = min(car.zone_factor, 1.0) * limit
    others = [lim for lim in limits if (lim.s_from, lim.s_to) != (s_in, s_out)]
    plateau = fast * action.duration_s
    v_a = v_b = keep  # first guess: the car holds its zone speed where the ramps start
    for _ in range(4):
        up = (fast**2 - v_a**2) / (2.0 * car.acc)
        down = (fast**2 - v_b**2) / (2.0 * car.brake)
        s_a = s_in + action.at * (s_out - s_in) - (up + plateau + down) / 2.0
        p0, p1 = s_a + up, s_a + up + plateau
        s_b = p1 + down
        if not s_in + GATE_CLEARANCE_M < s_a < s_b < s_out - GATE_CLEARANCE_M:
            raise ValueError(f"speeding for {action.duration_s} s does not fit in the zone")
        shaped = [
            *others,
            SpeedLimit(s_in, s_a, keep),
            SpeedLimit(s_a, s_b, fast),
            SpeedLimit(p0, p1, fast),
            SpeedLimit(s_b, s_out, keep),
        ]
        profile = Profile(stage.route, car, shaped, dwells)
        seen_a, seen_b = profile.speed_at_s(s_a), profile.speed_at_s(s_b)
        if abs(seen_a - v_a) < _PLATEAU_EPS and abs(seen_b - v_b) < _PLATEAU_EPS:
            break
        v_a, v_b = seen_a, seen_b
    lo, hi = bisect_left(profile.s, p0 - 1e-6), bisect_left(profile.s, p1 + 1e-6)
    if any(abs(v - fast) > 1e-6 for v in profile.v[lo:hi]) or hi - lo < 2:
        raise ValueError("speeding: the road there does not allow the plateau speed")
    return shaped


def _speeding_facts(leg: LegPlan, action: Speeding, head: dict[str, Any]) -> SpeedingFacts:
    traj, stage = leg.trajectory, leg.course
    prof = traj.profile
    zone, s_in, s_out, limit_kmh = _zone(stage, action.zone)
    limit = limit_kmh / 3.6
    fast = (limit_kmh + action.over_kmh) / 3.6
    on = [i for i, v in enumerate(prof.v) if s_in < prof.s[i] < s_out and v >= fast - 1e-6]
    top, above = prof.time_above(s_in, s_out, limit)
    _, above_tol = prof.time_above(s_in, s_out, (limit_kmh + action.tolerance_kmh) / 3.6)
    return SpeedingFacts(
        **head,
        zone=zone,
        limit_kmh=limit_kmh,
        over_kmh=action.over_kmh,
        tolerance_kmh=action.tolerance_kmh,
        entry_ms=_ms(traj.time_at(s_in)),
        exit_ms=_ms(traj.time_at(s_out)),
        plateau_from_ms=_abs(traj, prof.t[on[0]]),
        plateau_to_ms=_abs(traj, prof.t[on[-1]]),
        max_speed_kmh=round(top * 3.6, 6),
        above_limit_s=round(above, 7),
        above_tolerance_s=round(above_tol, 7),
        gained_m=round(gain_m(prof, s_in, s_out, limit), 6),
    )


def gain_m(prof: Profile, s_from: float, s_to: float, speed: float) -> float:
    """∫ max(0, v − speed) dt between two arc lengths: exact, v being linear in t on
    each profile interval."""
    t0, t1 = prof.time_at(s_from), prof.time_at(s_to)
    total = 0.0
    for i in range(prof.node_at_time(t0), len(prof.a)):
        lo, hi = max(prof.t[i], t0), min(prof.t[i + 1], t1)
        if lo >= t1:
            break
        if hi <= lo:
            continue
        va, vb = prof.v[i] + prof.a[i] * (lo - prof.t[i]), prof.v[i] + prof.a[i] * (hi - prof.t[i])
        if va >= speed and vb >= speed:
            total += ((va + vb) / 2.0 - speed) * (hi - lo)
        elif va > speed or vb > speed:
            top = max(va, vb)
            total += 0.5 * (top - speed) * (hi - lo) * (top - speed) / abs(vb - va)
    return total


# --- missed waypoint ------------------------------------------------------------------


def _waypoint(stage: StageCourse, fence_id: int | None) -> WaypointTable:
    tables = sorted(stage.waypoints, key=lambda w: w.fence.sequence)
    for table in tables:
        if fence_id is None or table.fence.id == fence_id:
            return table
    raise ValueError(f"stage {stage.stage.id} has no waypoint {fence_id or ''}".rstrip())


def _detour(
    course: Course, stage: StageCourse, miss: MissWaypoint
) -> tuple[StageCourse, int, float]:
    """The stage on a route bent away from the waypoint by radius + margin, as a
    cos² bump (tangent to the road at both ends) clear of every gate line; the first
    bump that keeps every gate and zone crossing, and every other waypoint's verdict,
    as they were."""
    table = _waypoint(stage, miss.geofence)
    radius = table.fence.radius_m or 0.0
    dist, s_w = table.closest_from(0.0)
    route = stage.route
    x, y, heading = route.at(s_w)
    dx, dy = math.sin(math.radians(heading)), math.cos(math.radians(heading))
    left_of_road = dx * (table.centre[1] - y) - dy * (table.centre[0] - x) > 0.0
    away = -1.0 if left_of_road else 1.0  # +1: offset to the left of the road
    for sign, depth in ((away, radius + miss.margin_m), (-away, dist + radius + miss.margin_m)):
        for half in DETOUR_HALF_LENGTHS_M:
            if any(abs(g.s - s_w) < half + DETOUR_STEP_M for g in stage.gates):
                continue
            bent = _bent(route, s_w, half, sign * depth)
            if bent is None:
                continue
            detoured = course.stage_course(stage.stage, bent)
            if _same_crossings(stage, detoured, table.fence.id, radius + miss.margin_m / 2):
                return detoured, table.fence.id, depth
    raise ValueError(f"no detour misses waypoint {table.fence.id} and keeps every crossing")


def _bent(route: Route, s_w: float, half: float, depth: float) -> Route | None:
    lo, hi = s_w - half, s_w + half
    if lo <= 0.0 or hi >= route.length:
        return None
    steps = math.ceil(2.0 * half / DETOUR_STEP_M)
    points: list[XY] = [route.point(i) for i in range(len(route)) if route.s[i] < lo]
    first = len(points)
    for k in range(steps + 1):
        s = lo + 2.0 * half * k / steps
        bx, by, _ = route.at(s)
        ax, ay, _ = route.at(max(0.0, s - DETOUR_STEP_M))
        cx, cy, _ = route.at(min(route.length, s + DETOUR_STEP_M))
        norm = math.hypot(cx - ax, cy - ay)
        w = math.cos(math.pi / 2.0 * (s - s_w) / half) ** 2
        points.append((bx - depth * w * (cy - ay) / norm, by + depth * w * (cx - ax) / norm))
    points.extend(route.point(i) for i in range(len(route)) if route.s[i] > hi)
    bent = Route(points)
    heads = bent.headings[max(0, first - 1) : first + steps + 1]
    turns = [abs((b - a + 180.0) % 360.0 - 180.0) for a, b in itertools.pairwise(heads)]
    return bent if max(turns) <= DETOUR_MAX_TURN_DEG else None


def _same_crossings(old: StageCourse, new: StageCourse, fence_id: int, clear_m: float) -> bool:
    def crossed(stage: StageCourse) -> list[tuple[int, bool]]:
        gates = [(g.fence.id, g.forward) for g in stage.gates]
        return gates + [(z.fence.id, z.entering) for z in stage.zones]

    if crossed(old) != crossed(new):
        return False
    for was, now in zip(old.waypoints, new.waypoints, strict=True):
        radius = was.fence.radius_m or 0.0
        distance = now.closest_from(0.0)[0]
        if was.fence.id == fence_id:
            if distance <= clear_m:
                return False
        elif (was.closest_from(0.0)[0] <= radius) != (distance <= radius):
            return False
    return True


def _miss_facts(
    leg: LegPlan, miss: MissWaypoint, offsets: dict[int, float], head: dict[str, Any]
) -> MissFacts:
    table = _waypoint(leg.course, miss.geofence)
    distance, s = table.closest_from(0.0)
    radius = table.fence.radius_m or 0.0
    return MissFacts(
        **head,
        geofence=table.fence.id,
        radius_m=radius,
        distance_m=round(distance, 4),
        closest_at_ms=_ms(leg.trajectory.time_at(s)),
        offset_m=offsets[table.fence.id],
        visited=distance <= radius,
    )


# --- offline --------------------------------------------------------------------------


def _finish_ms(leg: LegPlan) -> float:
    finish = [g for g in leg.course.gates if g.fence.kind == "finish_line"]
    return leg.trajectory.time_at((finish or leg.course.gates)[-1].s)


def _hold(leg: LegPlan, action: Offline) -> Hold:
    finish = _finish_ms(leg)
    start = action.from_ms
    if start is None:
        start = round(finish - 1000.0 * action.before_finish_s)
    upload = action.upload_at_ms
    if upload is None:
        upload = round(finish + 1000.0 * action.upload_after_finish_s)
    if not start < upload:
        raise ValueError("offline: the upload must come after the device goes quiet")
    return Hold(start, upload, action.order)


def _offline_facts(
    sim: Simulation, leg: LegPlan, action: Offline, head: dict[str, Any]
) -> OfflineFacts:
    # here, not at the top: the generator imports this module
    from processor.tools.simulator.generator import (
        OFFLINE_PACKET_GAP_MS,
        OFFLINE_PACKET_RECORDS,
    )

    hold = _hold(leg, action)
    period = sim.config.period_ms
    held = [
        ts
        for ts in range(leg.first_ms, leg.last_ms + 1, period)
        if hold.from_ms <= ts < hold.upload_ms
    ]
    last = None
    if held:
        last = hold.upload_ms + (len(held) - 1) // OFFLINE_PACKET_RECORDS * OFFLINE_PACKET_GAP_MS
    return OfflineFacts(
        **head,
        from_ms=hold.from_ms,
        upload_at_ms=hold.upload_ms,
        finish_ms=_ms(_finish_ms(leg)),
        order=action.order,
        records=len(held),
        first_ts_ms=held[0] if held else None,
        last_ts_ms=held[-1] if held else None,
        last_received_ms=last,
    )


# --- the CLI's text form --------------------------------------------------------------

_KINDS: dict[str, type[Action]] = {
    "stop": Stop,
    "speeding": Speeding,
    "miss-waypoint": MissWaypoint,
    "offline": Offline,
}
_ALIASES = {
    "duration": "duration_s",
    "at-m": "at_m",
    "threshold": "threshold_kmh",
    "over": "over_kmh",
    "tolerance": "tolerance_kmh",
    "waypoint": "geofence",
    "margin": "margin_m",
    "before-finish": "before_finish_s",
    "upload-after": "upload_after_finish_s",
    "from-ms": "from_ms",
    "upload-at-ms": "upload_at_ms",
}


def parse(text: str) -> Scenario:
    """`KIND:key=value,…`, e.g. `stop:entry=2,stage=1,fraction=0.5,duration=120`."""
    kind, _, rest = text.partition(":")
    action_type = _KINDS.get(kind.strip())
    if action_type is None:
        raise ValueError(f"scenario {text!r}: kind must be one of {', '.join(_KINDS)}")
    target: dict[str, int] = {}
    fields: dict[str, Any] = {}
    allowed = set(action_type.__dataclass_fields__)
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip().replace("_", "-")
        name = _ALIASES.get(key, key.replace("-", "_"))
        if not eq:
            raise ValueError(f"scenario {text!r}: {item!r} is not key=value")
        try:
            if name in ("entry", "device", "stage"):
                target[name] = int(value)
            elif name == "order":
                fields[name] = value.strip()
            elif name in allowed:
                whole = name.endswith("_ms") or name in ("zone", "geofence")
                fields[name] = int(value) if whole else float(value)
            else:
                raise ValueError(f"unknown key {key!r}")
        except ValueError as exc:
            raise ValueError(f"scenario {text!r}: {exc}") from None
    if "stage" not in target:
        raise ValueError(f"scenario {text!r}: stage=… is required")
    return Scenario(
        action=action_type(**fields),
        stage=target["stage"],
        entry=target.get("entry"),
        device=target.get("device"),
    )

"""A continuous-time vehicle model along a route polyline.

The car follows the route centreline. Its speed profile is built over arc length:
target speeds from curvature (and speed zones), then a forward pass (acceleration
limit) and a backward pass (braking limit). Between profile nodes v² is linear in s,
i.e. the acceleration is constant, so s(t), v(t) and t(s) have closed forms: the
trajectory is known exactly at any instant, with no integration error, and crossing
times can be solved rather than sampled.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

from processor.tools.simulator.geo import XY, bearing_deg

MIN_STAGE_SPEED_MS = 40.0 / 3.6
MAX_STAGE_SPEED_MS = 180.0 / 3.6
NODE_SPACING_M = 5.0
CURVATURE_WINDOW_M = 15.0


class Route:
    """A polyline in local metres with cumulative arc length and per-segment heading."""

    def __init__(self, points: Sequence[XY]) -> None:
        pts = [points[0]]
        for p in points[1:]:
            if p != pts[-1]:
                pts.append(p)
        if len(pts) < 2:
            raise ValueError("a route needs two distinct points")
        self.xs = [p[0] for p in pts]
        self.ys = [p[1] for p in pts]
        self.s = [0.0]
        self.headings: list[float] = []
        for i in range(1, len(pts)):
            dx, dy = self.xs[i] - self.xs[i - 1], self.ys[i] - self.ys[i - 1]
            self.s.append(self.s[-1] + math.hypot(dx, dy))
            self.headings.append(bearing_deg(dx, dy))
        self.length = self.s[-1]

    def __len__(self) -> int:
        return len(self.xs)

    def point(self, i: int) -> XY:
        return (self.xs[i], self.ys[i])

    def segment_at(self, s: float) -> int:
        """Index i of the segment [i, i+1] holding arc length s (clamped)."""
        return min(max(bisect_right(self.s, s) - 1, 0), len(self.s) - 2)

    def at(self, s: float) -> tuple[float, float, float]:
        """(x, y, heading) at arc length s."""
        i = self.segment_at(s)
        return self._on_segment(i, s)

    def _on_segment(self, i: int, s: float) -> tuple[float, float, float]:
        s0 = self.s[i]
        f = (s - s0) / (self.s[i + 1] - s0)
        x = self.xs[i] + f * (self.xs[i + 1] - self.xs[i])
        y = self.ys[i] + f * (self.ys[i + 1] - self.ys[i])
        return x, y, self.headings[i]

    def curvature_targets(self, node_s: Sequence[float], lat_acc: float) -> list[float]:
        """Speed a car with lateral grip `lat_acc` can hold at each node (no clamping).

        Curvature is the absolute turning per metre averaged over ±CURVATURE_WINDOW_M,
        so a finely discretised arc and its tangents give a smooth, ripple-free target.
        """
        turn_prefix = [0.0]  # cumulative |turn| at vertices 0..n-1
        for i in range(len(self.xs)):
            turn = 0.0
            if 0 < i < len(self.xs) - 1:
                turn = abs((self.headings[i] - self.headings[i - 1] + 180.0) % 360.0 - 180.0)
            turn_prefix.append(turn_prefix[-1] + math.radians(turn))
        targets = []
        window = CURVATURE_WINDOW_M
        for s in node_s:
            lo = bisect_right(self.s, s - window)
            hi = bisect_right(self.s, s + window)
            span = min(s + window, self.length) - max(s - window, 0.0)
            kappa = (turn_prefix[hi] - turn_prefix[lo]) / max(span, 1.0)
            targets.append(math.inf if kappa <= 0.0 else math.sqrt(lat_acc / kappa))
        return targets


@dataclass(frozen=True, slots=True)
class CarModel:
    """What differs between crews: top speed, grip, acceleration, braking, zone manners,
    and the floor of its speed in the tightest bend (a rally car 40 km/h, a kart 25)."""

    vmax_ms: float
    lat_acc: float
    acc: float
    brake: float
    zone_factor: float  # speed held in a speed zone, as a fraction of its limit
    vmin_ms: float = MIN_STAGE_SPEED_MS


@dataclass(frozen=True, slots=True)
class SpeedLimit:
    s_from: float
    s_to: float
    speed_ms: float


@dataclass(frozen=True, slots=True)
class Dwell:
    """A standstill of `duration_s` at arc length `s` mid-route (a scripted stop)."""

    s: float
    duration_s: float


class Profile:
    """Speed over arc length from s = 0 (standstill) to route end (standstill).

    Node i has arc length `s[i]`, speed `v[i]` and time `t[i]` (seconds after the
    start); on each interval the acceleration `a[i]` is constant. A dwell is a node
    where v = 0, repeated: the interval between the two copies has zero length and
    lasts the dwell, so every closed form below holds through it unchanged.
    """

    def __init__(
        self,
        route: Route,
        car: CarModel,
        limits: Sequence[SpeedLimit] = (),
        dwells: Sequence[Dwell] = (),
    ) -> None:
        self.route = route
        nodes = _nodes(route, limits, [d.s for d in dwells])
        target = route.curvature_targets(nodes, car.lat_acc)
        vmin, vmax = car.vmin_ms, min(car.vmax_ms, MAX_STAGE_SPEED_MS)
        v = [min(vmax, max(vmin, x)) for x in target]
        for limit in limits:
            cap = max(vmin, limit.speed_ms)
            for i, s in enumerate(nodes):
                if limit.s_from <= s <= limit.s_to:
                    v[i] = min(v[i], cap)
        n = len(v)
        if n < 3:
            raise ValueError("a route must be longer than two profile nodes")
        v[0] = v[-1] = 0.0
        dwell_at: dict[int, float] = {}
        for dwell in dwells:
            if not 0.0 < dwell.s < route.length or dwell.duration_s <= 0.0:
                raise ValueError("a dwell needs 0 < s < route length and a positive duration")
            i = min(range(n), key=lambda k: abs(nodes[k] - dwell.s))
            v[i] = 0.0
            dwell_at[i] = dwell_at.get(i, 0.0) + dwell.duration_s
        for i in range(1, n):
            v[i] = min(v[i], math.sqrt(v[i - 1] ** 2 + 2.0 * car.acc * (nodes[i] - nodes[i - 1])))
        for i in range(n - 2, -1, -1):
            v[i] = min(v[i], math.sqrt(v[i + 1] ** 2 + 2.0 * car.brake * (nodes[i + 1] - nodes[i])))
        self.s: list[float] = []
        self.v: list[float] = []
        self.t: list[float] = []
        self.a: list[float] = []
        t = 0.0
        for i in range(n):
            self.s.append(nodes[i])
            self.v.append(v[i])
            self.t.append(t)
            if i in dwell_at:  # the standstill: a zero-length interval
                self.a.append(0.0)
                t += dwell_at[i]
                self.s.append(nodes[i])
                self.v.append(0.0)
                self.t.append(t)
            if i + 1 < n:
                ds = nodes[i + 1] - nodes[i]
                self.a.append((v[i + 1] ** 2 - v[i] ** 2) / (2.0 * ds))
                t += 2.0 * ds / (v[i] + v[i + 1])
        self.duration = self.t[-1]

    def node_at_time(self, t: float) -> int:
        return min(max(bisect_right(self.t, t) - 1, 0), len(self.t) - 2)

    def node_at_s(self, s: float) -> int:
        return min(max(bisect_right(self.s, s) - 1, 0), len(self.s) - 2)

    def state(self, t: float) -> tuple[float, float]:
        """(s, v) at t seconds after the start, clamped to [0, duration]."""
        if t <= 0.0:
            return 0.0, 0.0
        if t >= self.duration:
            return self.route.length, 0.0
        return self._state_in(self.node_at_time(t), t)

    def _state_in(self, i: int, t: float) -> tuple[float, float]:
        tau = t - self.t[i]
        v0, a = self.v[i], self.a[i]
        return self.s[i] + v0 * tau + 0.5 * a * tau * tau, max(0.0, v0 + a * tau)

    def time_at(self, s: float) -> float:
        """Seconds after the start when the car is at arc length s (exact inverse; at a
        dwell, when it moves off)."""
        if s <= 0.0:
            return 0.0
        if s >= self.route.length:
            return self.duration
        i = self.node_at_s(s)
        ds = s - self.s[i]
        v0 = self.v[i]
        root = math.sqrt(max(0.0, v0 * v0 + 2.0 * self.a[i] * ds))
        # 2·ds / (v0 + v1) is the stable form of (v1 − v0) / a, and also holds for a = 0.
        return self.t[i] + (2.0 * ds / (v0 + root) if v0 + root > 0.0 else 0.0)

    def speed_at_s(self, s: float) -> float:
        i = self.node_at_s(s)
        ds = min(max(s - self.s[i], 0.0), self.s[i + 1] - self.s[i])
        return math.sqrt(max(0.0, self.v[i] ** 2 + 2.0 * self.a[i] * ds))

    def time_above(self, s_from: float, s_to: float, speed_ms: float) -> tuple[float, float]:
        """(max speed, seconds spent above `speed_ms`) between two arc lengths."""
        t0, t1 = self.time_at(s_from), self.time_at(s_to)
        top = max(self.speed_at_s(s_from), self.speed_at_s(s_to))
        above = 0.0
        i = self.node_at_time(t0)
        while i < len(self.a) and self.t[i] < t1:
            lo, hi = max(self.t[i], t0), min(self.t[i + 1], t1)
            if hi > lo:
                va = self._state_in(i, lo)[1]
                vb = self._state_in(i, hi)[1]
                top = max(top, va, vb)
                above += _time_above_linear(lo, hi, va, vb, speed_ms)
            i += 1
        return top, above


def _time_above_linear(t0: float, t1: float, v0: float, v1: float, limit: float) -> float:
    """Time above `limit` of a speed linear in time between (t0, v0) and (t1, v1)."""
    if v0 <= limit and v1 <= limit:
        return 0.0
    if v0 > limit and v1 > limit:
        return t1 - t0
    cut = t0 + (limit - v0) / (v1 - v0) * (t1 - t0)
    return t1 - cut if v1 > limit else cut - t0


def _nodes(route: Route, limits: Sequence[SpeedLimit], extra: Sequence[float] = ()) -> list[float]:
    """Profile nodes: every vertex, every limit boundary, each extra mark, and no gap
    over NODE_SPACING_M."""
    marks = set(route.s)
    for limit in limits:
        marks.update(x for x in (limit.s_from, limit.s_to) if 0.0 < x < route.length)
    marks.update(x for x in extra if 0.0 < x < route.length)
    ordered = sorted(marks)
    nodes = [ordered[0]]
    for s in ordered[1:]:
        gap = s - nodes[-1]
        if gap <= 1e-6:
            continue
        pieces = math.ceil(gap / NODE_SPACING_M)
        base = nodes[-1]
        nodes.extend(base + gap * k / pieces for k in range(1, pieces))
        nodes.append(s)
    return nodes


class Trajectory:
    """One leg in absolute time: parked at `s_park` until it starts moving at `t_go_ms`
    (from standstill at s = 0; a car joining mid-route is simply first seen at s_park
    after t_go), then the profile, then parked at the route end."""

    def __init__(self, profile: Profile, t_go_ms: float) -> None:
        self.profile = profile
        self.route = profile.route
        self.t_go_ms = t_go_ms
        self.t_stop_ms = t_go_ms + 1000.0 * profile.duration

    def state(self, t_ms: float) -> tuple[float, float, float, float, float]:
        """(x, y, heading °, speed m/s, s) at an absolute time in epoch milliseconds."""
        s, v = self.profile.state((t_ms - self.t_go_ms) / 1000.0)
        x, y, heading = self.route.at(s)
        return x, y, heading, v, s

    def time_at(self, s: float) -> float:
        """Absolute epoch milliseconds (float) when the car is at arc length s."""
        return self.t_go_ms + 1000.0 * self.profile.time_at(s)

    def sampler(self) -> Sampler:
        return Sampler(self)


class Sampler:
    """Sequential evaluation for non-decreasing times: cursors advance, no bisection."""

    __slots__ = ("_node", "_seg", "_traj")

    def __init__(self, traj: Trajectory) -> None:
        self._traj = traj
        self._node = 0
        self._seg = 0

    def at(self, t_ms: float) -> tuple[float, float, float, float, float]:
        traj = self._traj
        prof = traj.profile
        route = traj.route
        t = (t_ms - traj.t_go_ms) / 1000.0
        if t <= 0.0:
            s, v = 0.0, 0.0
        elif t >= prof.duration:
            s, v = route.length, 0.0
        else:
            times = prof.t
            i = self._node
            if times[i + 1] <= t:
                i = bisect_right(times, t, i) - 1
                self._node = i
            tau = t - times[i]
            a = prof.a[i]
            v0 = prof.v[i]
            s = prof.s[i] + v0 * tau + 0.5 * a * tau * tau
            v = max(0.0, v0 + a * tau)
        rs = route.s
        j = self._seg
        if rs[j + 1] <= s:
            j = min(bisect_right(rs, s, j) - 1, len(rs) - 2)
            self._seg = j
        x, y, heading = route._on_segment(j, s)
        return x, y, heading, v, s

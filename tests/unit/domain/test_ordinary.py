"""`ordinary`, the fast path's "nothing can raise an alert here": each condition on
hand-built records, and the property that makes the fast path safe — a window it
calls ordinary gets no alert from the detectors that the earlier records did not give."""

from __future__ import annotations

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.core.position import Position
from processor.domain.alerts import (
    ActiveSpan,
    AlertSpan,
    RouteIndex,
    Track,
    detect_alerts,
    detect_gps_jumps,
    jump_between,
)
from processor.domain.config import LineGeometry, Stage
from processor.domain.ordinary import ordinary
from processor.domain.rules import (
    AlertRules,
    GpsJumpRule,
    OffRouteRule,
    PanicRule,
    SignalLostRule,
    StoppedRule,
)
from tests.unit.domain.builders import PROJ, T0, fix, lonlat

RULES = AlertRules()
# Short thresholds, so that a few dozen fixes reach every alert.
SHORT = AlertRules(
    stopped=StoppedRule(after_s=4.0, escalate_after_s=8.0),
    signal_lost=SignalLostRule(after_s=5.0, escalate_after_s=10.0),
    gps_jump=GpsJumpRule(),
    off_route=OffRouteRule(distance_m=150.0, after_s=3.0),
    panic=PanicRule(merge_s=10.0),
)
ROUTE_2_Y = 300.0  # stage 2's road runs beside stage 1's, 300 m north


def _stage(stage_id: int, y: float | None) -> Stage:
    route = None if y is None else LineGeometry((lonlat((-1000.0, y)), lonlat((20000.0, y))))
    return Stage(stage_id, 1, f"SS{stage_id}", stage_id, route=route)


ONE_ROUTE = RouteIndex([_stage(1, 0.0), _stage(2, None)], PROJ)
TWO_ROUTES = RouteIndex([_stage(1, 0.0), _stage(2, ROUTE_2_Y)], PROJ)
STAGES = [1, 2]
ON_STAGE_1 = [ActiveSpan(1, T0 - 3_600_000)]


def at(
    t_s: float, x: float, y: float = 0.0, speed: float | None = 72.0, **changes: object
) -> Position:
    p = fix(t_s, (x, y), speed)
    return msgspec.structs.replace(p, **changes) if changes else p


def drive(t0_s: float, n: int, x0: float = 0.0, y: float = 0.0) -> list[Position]:
    """1 Hz fixes eastbound at 20 m/s (72 km/h)."""
    return [at(t0_s + i, x0 + 20.0 * i, y) for i in range(n)]


def is_ordinary(
    before: list[Position],
    new: list[Position],
    rules: AlertRules = RULES,
    routes: RouteIndex | None = ONE_ROUTE,
    active: list[ActiveSpan] | None = None,
) -> bool:
    fixes = [p for p in before if p.fix_valid]
    return ordinary(before[-1], fixes[-1] if fixes else None, new, rules, routes, STAGES, active)


# --- each condition -----------------------------------------------------------------------


def test_driving_along_the_route_is_ordinary() -> None:
    assert is_ordinary(drive(0, 5), drive(5, 5, x0=100.0))


def test_a_gap_longer_than_signal_lost_is_not() -> None:
    assert not is_ordinary(drive(0, 5), drive(36, 3, x0=720.0))
    assert is_ordinary(drive(0, 5), drive(34, 3, x0=680.0))


def test_a_buffered_upload_is_not() -> None:
    late = [msgspec.structs.replace(p, received_at_ms=p.ts_ms + 31_000) for p in drive(5, 2, 100.0)]
    assert not is_ordinary(drive(0, 5), late)


def test_a_panic_record_is_not() -> None:
    assert not is_ordinary(drive(0, 5), [at(5, 100.0, priority=2)])


def test_a_slow_fix_is_not_unless_known_off_every_stage() -> None:
    parked = [at(5 + i, 80.0, speed=0.0) for i in range(3)]
    assert not is_ordinary(drive(0, 5), parked)
    assert not is_ordinary(drive(0, 5), parked, active=ON_STAGE_1)
    finished = [ActiveSpan(1, T0 - 3_600_000, T0)]  # its stage ended before these fixes
    assert is_ordinary(drive(0, 5), parked, active=finished)
    assert not is_ordinary(drive(0, 5), [at(5, 100.0, speed=None)])  # no speed: maybe slow


def test_far_from_every_route_is_not_unless_known_off_every_stage() -> None:
    before, far = drive(0, 5, y=200.0), drive(5, 3, x0=100.0, y=200.0)
    assert not is_ordinary(before, far)
    assert not is_ordinary(before, far, active=ON_STAGE_1)
    assert is_ordinary(before, far, active=[])
    assert is_ordinary(before, far, routes=None)


def test_near_another_stages_route_counts_only_while_the_stage_is_unknown() -> None:
    """On stage 1, driving along stage 2's road: far from its own route. Known to be on
    stage 1, the fix is held to stage 1's route (the detector's)."""
    before, beside = drive(0, 5, y=ROUTE_2_Y), drive(5, 3, x0=100.0, y=ROUTE_2_Y)
    assert is_ordinary(before, beside, routes=TWO_ROUTES)  # the documented heuristic
    assert not is_ordinary(before, beside, routes=TWO_ROUTES, active=ON_STAGE_1)
    on_2 = [ActiveSpan(2, T0 - 3_600_000)]
    assert is_ordinary(before, beside, routes=TWO_ROUTES, active=on_2)


def test_the_jump_test_is_the_detectors() -> None:
    """Near the threshold the fast path and the detector answer alike: the same
    ellipsoid distance, the same minimum distance."""
    rule = RULES.gps_jump
    a = at(0, 0.0)
    for metres, dt_ms in ((60.0, 719), (60.0, 721), (49.9, 100), (50.1, 600), (50.1, 601)):
        b = at(dt_ms / 1000, metres)
        jumped = jump_between(a, b, rule) is not None
        assert jumped == bool(detect_gps_jumps_of([a, b]))
        assert is_ordinary([a], [b]) is not jumped
    assert jump_between(a, at(0.1, 10.0), rule) is None  # 360 km/h, but only 10 m


def test_a_jump_over_an_invalid_record_is_seen() -> None:
    """The record just before the window is not a valid fix: the jump is measured from
    the last valid one, as the detector does."""
    before = [*drive(0, 3), at(3, 60.0, fix_valid=False)]
    assert not is_ordinary(before, [at(4, 1060.0)])  # 1 km in 2 s
    assert is_ordinary(before, [at(4, 80.0)])


def detect_gps_jumps_of(records: list[Position]) -> list[AlertSpan]:
    return detect_gps_jumps(Track(records, ON_STAGE_1), RULES.gps_jump)


# --- the property -------------------------------------------------------------------------

_PROPS = settings(
    deadline=None,
    database=None,
    max_examples=400,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
_Y = st.sampled_from([0.0, 0.0, 0.0, 20.0, 140.0, 149.0, 151.0, 160.0, ROUTE_2_Y])


Step = tuple[int, float, float | None, float | None, bool, int, int]


@st.composite
def steps(draw: st.DrawFn) -> Step:
    """One step: (dt ms, metres east, new lateral offset or None, reported speed,
    valid, upload delay ms, priority)."""
    mode = draw(st.sampled_from(["drive"] * 6 + ["stand", "jump", "gap", "turn"]))
    speed: float | None = draw(
        st.one_of(st.floats(40.0, 120.0), st.floats(40.0, 120.0), st.floats(0.0, 10.0), st.none())
    )
    turn: float | None = None
    if mode == "jump":  # near both thresholds: ~50 m at ~300 km/h
        east = draw(st.floats(40.0, 60.0))
        dt = max(1, round(east / (draw(st.floats(280.0, 320.0)) / 3.6) * 1000))
    elif mode == "gap":  # about signal lost's 5 s
        dt = draw(st.integers(4_000, 7_000))
        east = dt / 1000 * 20.0
    elif mode == "stand":
        dt, east, speed = draw(st.integers(500, 1500)), 0.0, draw(st.floats(0.0, 6.0))
    else:
        dt = draw(st.integers(200, 1500))
        east = dt / 1000 * draw(st.floats(5.0, 40.0))
        if mode == "turn":
            turn = draw(_Y)
    valid = draw(st.integers(0, 9)) > 0
    delay = draw(st.sampled_from([500] * 12 + [4_000, 6_000]))
    priority = draw(st.sampled_from([0] * 30 + [2]))
    return dt, east, turn, speed, valid, delay, priority


@st.composite
def tracks(draw: st.DrawFn) -> tuple[list[Position], int]:
    """A device's records and where the window starts (an index)."""
    t, x, y = 0, 0.0, draw(_Y)
    records: list[Position] = []
    for dt, east, turn, speed, valid, delay, priority in draw(
        st.lists(steps(), min_size=3, max_size=30)
    ):
        t, x, y = t + dt, x + east, y if turn is None else turn
        p = at(t / 1000, x, y, speed=speed, fix_valid=valid, priority=priority)
        records.append(msgspec.structs.replace(p, received_at_ms=p.ts_ms + delay))
    return records, draw(st.integers(1, len(records) - 1))


@st.composite
def spans(draw: st.DrawFn, end_ms: int) -> list[ActiveSpan]:
    """Zero to two active spans anywhere over the track (stage 1, then stage 2)."""
    found = []
    start = T0 - 10_000
    for stage_id in (1, 2):
        if draw(st.booleans()):
            lo = draw(st.integers(start, max(start, end_ms)))
            hi = draw(st.one_of(st.none(), st.integers(lo + 1, max(lo + 1, end_ms + 10_000))))
            found.append(ActiveSpan(stage_id, lo, hi))
            if hi is None:
                break
            start = hi
    return found


def _no_new_alert(
    records: list[Position], split: int, active: list[ActiveSpan], known: bool, routes: RouteIndex
) -> None:
    before, new = records[:split], records[split:]
    fixes = [p for p in before if p.fix_valid]
    verdict = ordinary(
        before[-1],
        fixes[-1] if fixes else None,
        new,
        SHORT,
        routes,
        STAGES,
        active if known else None,
    )
    if not verdict:
        return
    earlier = detect_alerts(before, active, SHORT, routes)
    if any(s.may_change_from(new[0].ts_ms) for s in earlier):
        return  # a stored alert may change: the fast path takes the full path (`changing`)
    assert detect_alerts(records, active, SHORT, routes) == earlier


@_PROPS
@given(st.data())
def test_a_window_the_fast_path_calls_ordinary_raises_no_new_alert(data: st.DataObject) -> None:
    """Active spans known: each fix is held to its own stage's route (two routed stages)."""
    records, split = data.draw(tracks())
    active = data.draw(spans(records[-1].ts_ms))
    _no_new_alert(records, split, active, known=True, routes=TWO_ROUTES)


@_PROPS
@given(st.data())
def test_the_same_with_active_spans_unknown_and_one_routed_stage(data: st.DataObject) -> None:
    """Active spans unknown (the batch's first look): any span may hold any fix. With one
    routed stage, "near a route of the event" is exact (see `ordinary`'s docstring)."""
    records, split = data.draw(tracks())
    active = data.draw(spans(records[-1].ts_ms))
    _no_new_alert(records, split, active, known=False, routes=ONE_ROUTE)

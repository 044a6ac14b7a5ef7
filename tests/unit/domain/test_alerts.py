"""Safety alerts on hand-built tracks: each detector, its boundaries, and the locality
contract (range-start independence, recomputation after a change) as properties."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import msgspec
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.core.position import IoValue, Position
from processor.domain.alerts import (
    ActiveSpan,
    AlertSpan,
    RouteIndex,
    Track,
    detect_alerts,
    detect_gps_jumps,
    detect_off_route,
    detect_panic,
    detect_signal_lost,
    detect_stopped,
    lookback_ms,
    merge_recomputed,
    open_signal_lost,
    panic_triggers,
    read_from_ms,
)
from processor.domain.config import LineGeometry, Stage
from processor.domain.projection import XY
from processor.domain.rules import (
    AlertRules,
    GpsJumpRule,
    OffRouteRule,
    PanicRule,
    SignalLostRule,
    StoppedRule,
)
from tests.unit.domain.builders import PROJ, T0, fix, lonlat, straight

_PROPS = settings(
    deadline=None,
    database=None,
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

RULES = AlertRules()
ON_STAGE = [ActiveSpan(1, T0 - 3_600_000)]  # on stage 1 for the whole of every test track
ROUTED, UNROUTED = 1, 2
ROUTES = RouteIndex(
    [
        Stage(
            ROUTED, 1, "SS1", 1, route=LineGeometry((lonlat((-1000.0, 0.0)), lonlat((9000.0, 0.0))))
        ),
        Stage(UNROUTED, 1, "SS2", 2),
    ],
    PROJ,
)


def ms(t_s: float) -> int:
    return T0 + round(t_s * 1000)


def still(
    t0_s: float, seconds: int, at: XY = (0.0, 0.0), speed: float | None = 0.0
) -> list[Position]:
    """1 Hz fixes standing at one place, from t0_s to t0_s + seconds inclusive."""
    return [fix(t0_s + i, at, speed) for i in range(seconds + 1)]


def record(
    t_s: float,
    at: XY = (0.0, 0.0),
    *,
    valid: bool = True,
    priority: int = 0,
    io: dict[str, IoValue] | None = None,
    delay_ms: int = 500,
    speed: float | None = 0.0,
) -> Position:
    p = fix(t_s, at, speed, valid=valid)
    return msgspec.structs.replace(
        p, priority=priority, io=io or {}, received_at_ms=p.ts_ms + delay_ms
    )


def stopped(
    records: Sequence[Position],
    active: Sequence[ActiveSpan] = ON_STAGE,
    rule: StoppedRule = RULES.stopped,
) -> list[AlertSpan]:
    return detect_stopped(Track(records, active), rule)


def lost(
    records: Sequence[Position],
    active: Sequence[ActiveSpan] = ON_STAGE,
    rule: SignalLostRule = RULES.signal_lost,
) -> list[AlertSpan]:
    return detect_signal_lost(Track(records, active), rule)


def jumps(
    records: Sequence[Position],
    active: Sequence[ActiveSpan] = ON_STAGE,
    rule: GpsJumpRule = RULES.gps_jump,
) -> list[AlertSpan]:
    return detect_gps_jumps(Track(records, active), rule)


def off(
    records: Sequence[Position],
    active: Sequence[ActiveSpan] = ON_STAGE,
    rule: OffRouteRule = RULES.off_route,
) -> list[AlertSpan]:
    return detect_off_route(Track(records, active), rule, ROUTES)


def panics(
    records: Sequence[Position],
    active: Sequence[ActiveSpan] = ON_STAGE,
    rule: PanicRule = RULES.panic,
) -> list[AlertSpan]:
    return detect_panic(Track(records, active), rule)


def drive(
    t0_s: float, seconds: int, start: XY = (0.0, 0.0), speed: float | None = 72.0
) -> list[Position]:
    """1 Hz fixes eastbound at 20 m/s (72 km/h)."""
    return straight(start, (20.0, 0.0), seconds, speed, t0_s=t0_s)


# --- stopped -----------------------------------------------------------------------------


def test_stopped_for_exactly_after_s_is_a_warning_from_the_first_slow_fix() -> None:
    track = still(0, 60) + drive(61, 3)
    [span] = stopped(track)
    assert (span.kind, span.stage_id, span.severity) == ("stopped", 1, "warning")
    assert (span.started_at_ms, span.ended_at_ms, span.settled_after_ms) == (ms(0), ms(61), ms(61))
    assert not span.ongoing
    assert span.details["duration_ms"] == 60_000
    assert span.details["alerted_at_ms"] == ms(60)
    assert span.details["escalated_at_ms"] is None
    assert span.details["fixes"] == 61
    assert span.details["speed_below_kmh"] == 5.0
    assert span.details["after_s"] == 60.0


def test_slow_for_less_than_after_s_is_no_alert() -> None:
    assert stopped(still(0, 59) + drive(60, 3)) == []


def test_stopped_escalates_to_critical_at_escalate_after_s() -> None:
    [span] = stopped(still(0, 180) + drive(181, 2))
    assert span.severity == "critical"
    assert span.details["escalated_at_ms"] == ms(180)
    [short] = stopped(still(0, 179) + drive(180, 2))
    assert short.severity == "warning"


def test_stopped_is_open_while_the_data_ends_slow() -> None:
    [span] = stopped(drive(0, 5) + still(6, 70, at=(100.0, 0.0)))
    assert span.started_at_ms == ms(6)
    assert span.ended_at_ms is None
    assert span.settled_after_ms is None
    assert span.ongoing
    assert span.may_change_from(ms(10_000))


def test_the_first_fix_at_or_above_the_threshold_ends_a_stop() -> None:
    slow = still(0, 65, speed=4.99)
    at_threshold = [fix(66, (0.0, 0.0), 5.0)]
    [span] = stopped(slow + at_threshold + still(67, 10))
    assert span.ended_at_ms == ms(66)
    assert span.details["max_speed_kmh"] == 4.99


def test_a_gap_inside_a_stop_does_not_end_it() -> None:
    track = still(0, 10) + still(300, 10) + drive(311, 2)
    [span] = stopped(track)
    assert (span.started_at_ms, span.ended_at_ms) == (ms(0), ms(311))
    assert span.details["duration_ms"] == 310_000
    assert span.severity == "critical"


def test_invalid_records_inside_a_stop_do_not_end_it() -> None:
    track = still(0, 30) + [
        record(31 + i, (5000.0, 0.0), valid=False, speed=None) for i in range(20)
    ]
    track += still(51, 20)
    [span] = stopped(track)
    assert span.started_at_ms == ms(0)
    assert span.ended_at_ms is None
    assert span.details["fixes"] == 52


def test_a_car_that_moved_during_a_gap_stopped_twice() -> None:
    # Slow on both sides of a 5-minute gap, but 2 km apart: the first stop ended.
    track = still(0, 40) + still(340, 70, at=(2000.0, 0.0))
    [span] = stopped(track)
    assert span.started_at_ms == ms(340)


def test_stops_only_count_inside_an_active_span() -> None:
    track = still(0, 100) + drive(101, 3)
    assert stopped(track, active=[]) == []
    assert stopped(track, active=[ActiveSpan(1, ms(200))]) == []
    # On stage from t = 30: clipped to its first slow fix on stage.
    [late] = stopped(track, active=[ActiveSpan(4, ms(30))])
    assert (late.stage_id, late.started_at_ms, late.details["duration_ms"]) == (4, ms(30), 70_000)
    # Off stage at t = 90.5: the stop ends with the stage.
    [early] = stopped(track, active=[ActiveSpan(4, ms(0), ms(90.5))])
    assert (early.started_at_ms, early.ended_at_ms) == (ms(0), ms(90.5))
    assert early.settled_after_ms == ms(90.5)
    # Stage finished after the last fix: closed at the stage's end, not open.
    [ended] = stopped(still(0, 100), active=[ActiveSpan(4, ms(0), ms(150))])
    assert ended.ended_at_ms == ms(150)


def test_a_stop_does_not_run_across_two_stages() -> None:
    active = [ActiveSpan(1, ms(0), ms(50)), ActiveSpan(2, ms(50))]
    spans = stopped(still(0, 200), active=active)
    assert [(s.stage_id, s.started_at_ms, s.ended_at_ms) for s in spans] == [(2, ms(50), None)]


def test_without_a_reported_speed_the_implied_speed_decides() -> None:
    [span] = stopped(still(0, 70, speed=None) + drive(71, 3, start=(20.0, 0.0), speed=None))
    # The very first fix has no speed and nothing before it: the stop starts at t = 1.
    assert (span.started_at_ms, span.ended_at_ms) == (ms(1), ms(71))
    assert stopped(drive(0, 100, speed=None)) == []


def test_a_fix_without_speed_after_a_long_gap_cannot_start_a_stop() -> None:
    track = drive(0, 3) + still(200, 70, at=(1000.0, 0.0), speed=None)
    [span] = stopped(track)
    assert span.started_at_ms == ms(201)


def test_without_speeds_a_gap_longer_than_after_s_ends_a_stop() -> None:
    # Nothing says the car stood still for those 90 s: the fix after the gap has no
    # speed, so the stop ends there and the next one starts a second later.
    track = still(0, 70, speed=None) + still(160, 70, speed=None)
    spans = stopped(track)
    assert [(s.started_at_ms, s.ended_at_ms) for s in spans] == [
        (ms(1), ms(160)),
        (ms(161), None),
    ]


def test_reading_less_than_the_lookback_can_miss_the_start_of_a_stop() -> None:
    rules = AlertRules(
        stopped=StoppedRule(after_s=5.0, escalate_after_s=10.0),
        off_route=OffRouteRule(after_s=1.0),
        panic=PanicRule(merge_s=1.0),
    )
    # Driving without speed until t = -3, then standing from t = 0 (speed implied
    # from t = -3): at t = 4 not alerted yet; fixes from t = 5 on arrive later.
    track = drive(-7, 4, speed=None) + still(0, 9, at=(80.0, 0.0), speed=None)
    changed = ms(4.5)
    [span] = stopped(track, rule=rules.stopped)
    assert span.started_at_ms == ms(0)
    start = read_from_ms(changed, ms(4), ms(4), rules)
    assert start == ms(4) - 10_000
    [again] = stopped([p for p in track if p.ts_ms >= start], rule=rules.stopped)
    assert again == span
    short = ms(4) - _ms_of(rules.stopped.after_s)
    [wrong] = stopped([p for p in track if p.ts_ms >= short], rule=rules.stopped)
    assert wrong.started_at_ms == ms(1)


def _ms_of(seconds: float) -> int:
    return round(seconds * 1000)


# --- signal lost ----------------------------------------------------------------------------


def test_a_gap_longer_than_after_s_is_a_closed_signal_loss() -> None:
    track = drive(0, 5) + drive(36, 5, start=(700.0, 0.0))
    [span] = lost(track)
    assert (span.kind, span.stage_id, span.severity) == ("signal_lost", 1, "warning")
    assert (span.started_at_ms, span.ended_at_ms, span.settled_after_ms) == (ms(5), ms(36), ms(36))
    assert span.details["gap_ms"] == 31_000
    assert span.details["filled_by_upload"] is False
    assert span.details["upload_delay_ms"] == 500
    assert span.details["last_latitude"] == track[5].latitude


def test_a_gap_of_exactly_after_s_is_no_signal_loss() -> None:
    assert lost(drive(0, 5) + drive(35, 5, start=(600.0, 0.0))) == []


def test_a_long_gap_is_critical() -> None:
    [span] = lost(drive(0, 2) + drive(122, 2))
    assert span.severity == "critical"
    [shorter] = lost(drive(0, 2) + drive(121.999, 2))
    assert shorter.severity == "warning"


def test_a_gap_filled_by_a_buffered_upload_says_so() -> None:
    late = [record(40 + i, delay_ms=600_000) for i in range(3)]
    [span] = lost(still(0, 5) + late)
    assert span.details["filled_by_upload"] is True
    assert span.details["upload_delay_ms"] == 600_000


def test_a_buffered_upload_without_a_gap_is_still_a_signal_loss() -> None:
    # The tracker kept recording every second, but nothing arrived from 5 s until its
    # buffer was uploaded at 600 s: no gap in the data, and race control was blind.
    late = [record(6 + i, delay_ms=594_000 - 1000 * i) for i in range(40)]
    [span] = lost(still(0, 5) + late + still(46, 2))
    # Settled once a live record follows the run, and the upload has been heard.
    assert (span.started_at_ms, span.ended_at_ms, span.settled_after_ms) == (
        ms(5),
        ms(600),
        ms(600),
    )
    assert span.details["filled_by_upload"] is True
    assert span.details["records_recovered"] == 40
    assert span.severity == "critical"
    # Still uploading (the last records are the blind ones): not settled yet.
    [going] = lost(still(0, 5) + late)
    assert going.settled_after_ms is None
    # Records a few seconds late are network latency, not a loss.
    assert lost(still(0, 5) + [record(6 + i, delay_ms=29_000) for i in range(40)]) == []


def test_invalid_records_are_records_for_signal_loss() -> None:
    no_fix = [record(5 + 20 * i, valid=False) for i in range(1, 4)]
    assert lost(still(0, 5) + no_fix + still(85, 3)) == []
    [span] = lost([record(0, valid=False), record(100, valid=False)])
    assert span.details["last_latitude"] is None


def test_signal_loss_counts_only_on_a_running_stage() -> None:
    track = still(0, 5) + still(200, 5)
    assert lost(track, active=[]) == []
    assert lost(track, active=[ActiveSpan(1, ms(300))]) == []
    assert lost(track, active=[ActiveSpan(1, ms(0), ms(30))]) == []
    [started] = lost(track, active=[ActiveSpan(3, ms(150))])
    assert (started.stage_id, started.started_at_ms, started.ended_at_ms) == (3, ms(150), ms(200))
    assert started.details["gap_ms"] == 195_000
    [finished] = lost(track, active=[ActiveSpan(3, ms(0), ms(100))])
    assert (finished.started_at_ms, finished.ended_at_ms) == (ms(5), ms(100))
    assert finished.settled_after_ms == ms(200)
    assert finished.severity == "warning"


def test_the_open_signal_loss_has_the_start_of_the_closed_one() -> None:
    before = drive(0, 5)
    last = before[-1]
    assert open_signal_lost(last, ms(35), ON_STAGE, RULES) is None
    opened = open_signal_lost(last, ms(35.001), ON_STAGE, RULES)
    assert opened is not None
    assert (opened.started_at_ms, opened.ended_at_ms, opened.severity) == (ms(5), None, "warning")
    assert opened.ongoing
    assert opened.settled_after_ms is None
    assert opened.details["silent_ms"] == 30_001
    [closed] = lost(before + drive(300, 2, start=(500.0, 0.0)))
    assert (closed.kind, closed.started_at_ms) == (opened.kind, opened.started_at_ms)
    assert closed.severity == "critical"
    critical = open_signal_lost(last, ms(125), ON_STAGE, RULES)
    assert critical is not None
    assert critical.severity == "critical"


def test_no_open_signal_loss_off_stage_or_without_records() -> None:
    last = fix(0, (0.0, 0.0))
    assert open_signal_lost(None, ms(100), ON_STAGE, RULES) is None
    assert open_signal_lost(last, ms(100), [], RULES) is None
    assert open_signal_lost(last, ms(100), [ActiveSpan(1, ms(0), ms(50))], RULES) is None
    # On a stage that started after the last record: counted from the stage's start.
    opened = open_signal_lost(last, ms(100), [ActiveSpan(5, ms(60))], RULES)
    assert opened is not None
    assert (opened.stage_id, opened.started_at_ms) == (5, ms(60))
    closed = lost([last, fix(100, (0.0, 0.0))], [ActiveSpan(5, ms(60))])
    assert [s.started_at_ms for s in closed] == [ms(60)]


# --- GPS jump -------------------------------------------------------------------------------


def test_a_jump_is_an_instant_warning_at_the_later_fix() -> None:
    track = [*drive(0, 3), fix(4, (1060.0, 0.0), 72.0), *drive(5, 2, start=(100.0, 0.0))]
    spans = jumps(track, active=[])
    assert [(s.started_at_ms, s.ended_at_ms) for s in spans] == [(ms(4), ms(4)), (ms(5), ms(5))]
    first = spans[0]
    assert (first.kind, first.stage_id, first.severity) == ("gps_jump", None, "warning")
    assert first.details["distance_m"] == pytest.approx(1000.0, abs=0.01)
    assert first.details["dt_ms"] == 1000
    assert first.details["implied_speed_kmh"] == pytest.approx(3600.0, abs=0.1)
    assert first.details["from_ms"] == ms(3)
    assert jumps(track)[0].stage_id == 1


def test_no_jump_below_the_minimum_distance_or_at_the_maximum_speed() -> None:
    close = [fix(0, (0.0, 0.0)), fix(0.1, (40.0, 0.0))]  # 1440 km/h, but 40 m
    assert jumps(close) == []
    # 100 m in 1.2 s is exactly 300 km/h (up to the projection's tiny scale error).
    rule = GpsJumpRule(max_speed_kmh=299.0)
    assert len(jumps([fix(0, (0.0, 0.0)), fix(1.2, (100.0, 0.0))], rule=rule)) == 1
    rule = GpsJumpRule(max_speed_kmh=301.0)
    assert jumps([fix(0, (0.0, 0.0)), fix(1.2, (100.0, 0.0))], rule=rule) == []


def test_invalid_fixes_cannot_jump() -> None:
    track = [fix(0, (0.0, 0.0)), record(1, (5000.0, 0.0), valid=False), fix(2, (10.0, 0.0))]
    assert jumps(track) == []


# --- off route ------------------------------------------------------------------------------


def excursion(far_s: int, offset_m: float = 200.0) -> list[Position]:
    """On the route for 5 s, `far_s` + 1 fixes `offset_m` north of it, then back."""
    on = [fix(i, (20.0 * i, 0.0), 72.0) for i in range(5)]
    away = [fix(5 + i, (100.0 + 20.0 * i, offset_m), 72.0) for i in range(far_s + 1)]
    back = [fix(6 + far_s + i, (120.0 + 20.0 * (far_s + i), 0.0), 72.0) for i in range(3)]
    return on + away + back


def test_far_from_the_route_for_after_s_is_a_warning_until_back() -> None:
    [span] = off(excursion(30))
    assert (span.kind, span.stage_id, span.severity) == ("off_route", ROUTED, "warning")
    assert (span.started_at_ms, span.ended_at_ms, span.settled_after_ms) == (ms(5), ms(36), ms(36))
    assert span.details["max_distance_m"] == pytest.approx(200.0, abs=0.01)
    assert span.details["duration_ms"] == 30_000
    assert span.details["alerted_at_ms"] == ms(35)
    assert span.details["distance_m"] == 150.0
    assert off(excursion(29)) == []


def test_off_route_reports_the_largest_distance_and_when() -> None:
    track = excursion(40)
    track[20] = fix(20, (400.0, -450.0), 72.0)
    [span] = off(track)
    assert span.details["max_distance_m"] == pytest.approx(450.0, abs=0.01)
    assert span.details["max_distance_at_ms"] == ms(20)


def test_off_route_is_open_while_the_data_ends_far() -> None:
    [span] = off(excursion(40)[:-3])
    assert span.ended_at_ms is None
    assert span.ongoing


def test_within_the_distance_is_on_route() -> None:
    assert off(excursion(60, offset_m=150.0)) == []
    assert len(off(excursion(60, offset_m=150.5))) == 1


def test_no_off_route_without_a_route_or_off_stage() -> None:
    track = excursion(60)
    assert off(track, active=[ActiveSpan(UNROUTED, T0 - 1000)]) == []
    assert off(track, active=[]) == []
    assert off(track, active=[ActiveSpan(99, T0 - 1000)]) == []  # a stage RouteIndex lacks
    kinds = [s.kind for s in detect_alerts(track, ON_STAGE, RULES)]
    assert "off_route" not in kinds
    kinds = [s.kind for s in detect_alerts(track, ON_STAGE, RULES, ROUTES)]
    assert kinds.count("off_route") == 1


def test_route_distances_are_exact() -> None:
    points = [(300.0, 5.0), (-1200.0, 0.0), (9500.0, -20.0), (4000.0, 3_000.0), (0.0, 0.0)]
    lonlats = [lonlat(p) for p in points]
    got = ROUTES.distances_m(ROUTED, lonlats, 150.0)
    assert got == pytest.approx([5.0, 200.0, math.hypot(500.0, 20.0), 3000.0, 0.0], abs=1e-6)


@_PROPS
@given(
    st.lists(st.tuples(st.floats(-3000, 3000), st.floats(-3000, 3000)), min_size=2, max_size=30),
    st.lists(st.tuples(st.floats(-5000, 5000), st.floats(-5000, 5000)), min_size=1, max_size=20),
    st.floats(0.0, 500.0),
)
def test_route_distances_match_shapely(route: list[XY], points: list[XY], radius: float) -> None:
    routes = RouteIndex(
        [Stage(1, 1, "r", 1, route=LineGeometry(tuple(lonlat(p) for p in route)))], PROJ
    )
    got = routes.distances_m(1, [lonlat(p) for p in points], radius)
    line = shapely.LineString([PROJ.to_xy(*lonlat(p)) for p in route])
    want = [line.distance(shapely.Point(PROJ.to_xy(*lonlat(p)))) for p in points]
    assert got == pytest.approx(want, abs=1e-6)
    # The fast path's question, without the search: within the radius or not.
    near = routes.near(1, [lonlat(p) for p in points], radius)
    assert [n for n, w in zip(near, want, strict=True) if abs(w - radius) > 1e-6] == [
        w <= radius for w in want if abs(w - radius) > 1e-6
    ]


# --- panic ----------------------------------------------------------------------------------


def test_a_panic_record_is_critical_at_once_and_stays_open() -> None:
    track = [*still(0, 5), record(6, (0.0, 0.0), priority=2), *still(7, 5)]
    [span] = panics(track)
    assert (span.kind, span.stage_id, span.severity) == ("panic", 1, "critical")
    assert (span.started_at_ms, span.ended_at_ms) == (ms(6), None)
    assert span.settled_after_ms == ms(66)
    assert span.details["count"] == 1
    assert span.details["triggers"] == ["priority:2"]
    assert span.details["first_ms"] == span.details["last_ms"] == ms(6)


def test_panic_records_within_merge_s_are_one_alert() -> None:
    track = [record(t, priority=2) for t in (0, 30, 90, 150.001, 151)]
    spans = panics(track)
    assert [(s.started_at_ms, s.details["count"], s.details["last_ms"]) for s in spans] == [
        (ms(0), 3, ms(90)),
        (ms(150.001), 2, ms(151)),
    ]


def test_panic_from_alarm_io_and_anywhere() -> None:
    rule = PanicRule(priorities=(), alarm_io=("io247", "252"))
    track = [
        record(0, io={"247": 0, "252": 0}),
        record(100, valid=False, io={"247": 1}),
        record(200, io={"252": b"\x00\x01"}),
        record(300, io={"252": b"\x00"}),
        record(400, priority=2),
    ]
    spans = panics(track, active=[], rule=rule)
    assert [(s.started_at_ms, s.stage_id, s.details["triggers"]) for s in spans] == [
        (ms(100), None, ["io:247"]),
        (ms(200), None, ["io:252"]),
    ]
    assert spans[0].details["latitude"] is None  # no valid fix among its records
    both = record(0, priority=2, io={"247": 3})
    assert panic_triggers(both, PanicRule(alarm_io=("247",))) == ["priority:2", "io:247"]


# --- all together ---------------------------------------------------------------------------


def test_detect_alerts_orders_by_start_then_kind() -> None:
    track = [*still(0, 70), record(71, priority=2), *drive(72, 3)]
    track += drive(110, 40, start=(5000.0, 300.0))  # a jump off the route after a gap
    spans = detect_alerts(track, ON_STAGE, RULES, ROUTES)
    assert [(s.kind, s.started_at_ms, s.ended_at_ms) for s in spans] == [
        ("stopped", ms(0), ms(72)),
        ("panic", ms(71), None),
        ("signal_lost", ms(75), ms(110)),
        ("off_route", ms(110), None),
        ("gps_jump", ms(110), ms(110)),
    ]


def test_records_of_several_devices_are_refused() -> None:
    other = msgspec.structs.replace(fix(1, (0.0, 0.0)), device_id="other")
    with pytest.raises(ValueError, match="several devices"):
        detect_alerts([fix(0, (0.0, 0.0)), other], ON_STAGE, RULES)


def test_lookback_and_read_start() -> None:
    assert lookback_ms(RULES) == 120_000
    rules = AlertRules(off_route=OffRouteRule(after_s=500.0))
    assert lookback_ms(rules) == 500_000
    assert read_from_ms(ms(100), ms(90), ms(80), RULES) == ms(80) - 120_000
    assert read_from_ms(ms(100), ms(90), None, RULES) == ms(90) - 120_000
    assert read_from_ms(ms(100), None, None, RULES) == ms(100) - 120_000


# --- properties -----------------------------------------------------------------------------

# Small thresholds so short random tracks are full of alerts and boundaries.
SMALL = AlertRules(
    stopped=StoppedRule(speed_below_kmh=5.0, after_s=5.0, escalate_after_s=12.0),
    signal_lost=SignalLostRule(after_s=3.0, escalate_after_s=10.0),
    gps_jump=GpsJumpRule(max_speed_kmh=200.0, min_distance_m=30.0),
    off_route=OffRouteRule(distance_m=20.0, after_s=4.0),
    panic=PanicRule(priorities=(2,), alarm_io=("io247",), merge_s=5.0),
)

_piece = st.tuples(
    st.sampled_from(["drive", "stop", "gap", "invalid", "panic", "jump", "late"]),
    st.integers(1, 12),  # length (fixes, or seconds of gap)
    st.booleans(),  # reported speed (else None) / off the route
    st.sampled_from([1000, 1000, 500, 1500]),  # time step, ms
)


@st.composite
def tracks(draw: st.DrawFn) -> tuple[list[Position], list[ActiveSpan]]:
    """A device's records built from pieces, with up to three active spans."""
    pieces = draw(st.lists(_piece, min_size=1, max_size=25))
    t, x, y = T0, 0.0, 0.0
    delay = 500
    out: list[Position] = []

    def add(
        *,
        valid: bool = True,
        speed: float | None = 0.0,
        priority: int = 0,
        io: dict[str, IoValue] | None = None,
    ) -> None:
        lon, lat = lonlat((x, y))
        out.append(
            Position(
                device_id="dev",
                ts_ms=t,
                received_at_ms=t + delay,
                latitude=lat,
                longitude=lon,
                fix_valid=valid,
                stream_id="0-0",
                priority=priority,
                speed=speed,
                io=io or {},
            )
        )

    add()
    for kind, n, flag, step in pieces:
        if kind == "gap":
            t += n * 2000
            if flag:
                x += 400.0
            continue
        if kind == "late":
            delay = 60_000 if delay == 500 else 500
            continue
        for _ in range(n):
            t += step
            if kind == "drive":
                x += 20.0 * step / 1000
                y = 30.0 if flag else 0.0
                add(speed=72.0 if flag or n % 2 else None)
            elif kind == "stop":
                add(speed=0.0 if flag else None)
            elif kind == "invalid":
                add(valid=False, speed=None)
            elif kind == "panic":
                add(priority=2 if flag else 0, io=None if flag else {"247": 1})
            else:  # a jump out and back
                x += 300.0
                add(speed=72.0)
                x -= 300.0
    if draw(st.booleans()):  # on the routed stage throughout: most alerts count
        return out, [ActiveSpan(ROUTED, T0 - 1000)]
    cuts = sorted(draw(st.lists(st.integers(T0 - 2000, t + 2000), max_size=6)))
    open_end = draw(st.booleans())
    active: list[ActiveSpan] = []
    for k, i in enumerate(range(0, len(cuts) - 1, 2)):
        end: int | None = cuts[i + 1]
        if open_end and i + 2 >= len(cuts) - 1:
            end = None
        active.append(ActiveSpan(ROUTED if k % 2 == 0 else UNROUTED, cuts[i], end))
        if end is None:
            break
    return out, active


def boundaries(records: Sequence[Position], rnd: random.Random, most: int = 60) -> list[int]:
    """Every record's time and the millisecond after it (where the boundaries are); a
    sample of them on long tracks, so a check stays linear in the track's length."""
    times = sorted({p.ts_ms + d for p in records for d in (0, 1)})
    return sorted(rnd.sample(times, most)) if len(times) > most else times


def _before(records: Sequence[Position], at: int) -> tuple[int | None, int | None]:
    """The last record and the last valid fix strictly before `at`."""
    record_ts = max((p.ts_ms for p in records if p.ts_ms < at), default=None)
    fix_ts = max((p.ts_ms for p in records if p.ts_ms < at and p.fix_valid), default=None)
    return record_ts, fix_ts


@_PROPS
@given(tracks(), st.randoms(use_true_random=False))
def test_order_and_duplicates_do_not_matter(
    track: tuple[list[Position], list[ActiveSpan]], rnd: random.Random
) -> None:
    records, active = track
    shuffled = records + rnd.sample(records, k=len(records) // 3)
    rnd.shuffle(shuffled)
    spans = list(active)
    rnd.shuffle(spans)
    assert detect_alerts(shuffled, spans, SMALL, ROUTES) == detect_alerts(
        records, active, SMALL, ROUTES
    )


@_PROPS
@given(tracks(), st.integers(0, 5000), st.randoms(use_true_random=False))
def test_spans_after_a_point_do_not_depend_on_where_reading_starts(
    track: tuple[list[Position], list[ActiveSpan]], extra_ms: int, rnd: random.Random
) -> None:
    records, active = track
    full = detect_alerts(records, active, SMALL, ROUTES)
    # Every record's time and the millisecond after it: where the boundaries are.
    for point in boundaries(records, rnd):
        start = read_from_ms(point, *_before(records, point), SMALL) - extra_ms
        part = detect_alerts([p for p in records if p.ts_ms >= start], active, SMALL, ROUTES)
        assert [s for s in part if s.started_at_ms >= point] == [
            s for s in full if s.started_at_ms >= point
        ], point


def _altered(p: Position, how: str) -> Position | None:
    if how == "keep":
        return p
    if how == "drop":
        return None
    if how == "invalid":
        return msgspec.structs.replace(p, fix_valid=False)
    if how == "slow":
        return msgspec.structs.replace(p, speed=0.0)
    return msgspec.structs.replace(p, priority=2)


@settings(_PROPS, max_examples=100)
@given(
    tracks(),
    st.lists(
        st.sampled_from(["keep", "drop", "drop", "invalid", "slow", "panic"]),
        min_size=1,
        max_size=6,
    ),
    st.booleans(),
    st.randoms(use_true_random=False),
)
def test_recomputing_after_a_change_converges_to_the_full_result(
    track: tuple[list[Position], list[ActiveSpan]],
    pattern: list[str],
    forward: bool,
    rnd: random.Random,
) -> None:
    records, active = track
    original = detect_alerts(records, active, SMALL, ROUTES)
    for point in boundaries(records, rnd):
        changed: list[Position] = []
        for i, p in enumerate(records):
            q = _altered(p, pattern[i % len(pattern)]) if p.ts_ms >= point else p
            if q is not None:
                changed.append(q)
        detected = detect_alerts(changed, active, SMALL, ROUTES)
        # Records at or after `point` changed, one way or the other.
        new = changed if forward else records
        stored, expected = (original, detected) if forward else (detected, original)
        start = read_from_ms(point, *_before(new, point), SMALL)
        for span in stored:
            if span.may_change_from(point):
                start = min(start, span.started_at_ms - lookback_ms(SMALL))
        recomputed = detect_alerts([p for p in new if p.ts_ms >= start], active, SMALL, ROUTES)
        assert merge_recomputed(stored, recomputed, point) == expected, point


@_PROPS
@given(tracks())
def test_span_invariants(track: tuple[list[Position], list[ActiveSpan]]) -> None:
    records, active = track
    for span in detect_alerts(records, active, SMALL, ROUTES):
        if span.ended_at_ms is not None:
            assert span.ended_at_ms >= span.started_at_ms
        if span.kind in ("stopped", "signal_lost", "off_route"):
            assert span.stage_id is not None
            assert any(a.contains(span.started_at_ms) for a in active)
        if span.kind == "panic":
            assert span.ended_at_ms is None
            assert span.severity == "critical"
        if span.settled_after_ms is not None and span.ended_at_ms is not None:
            assert span.settled_after_ms >= span.ended_at_ms

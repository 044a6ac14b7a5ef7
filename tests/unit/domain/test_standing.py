"""The pure rules of settling a pair (`processor.domain.standing`): officials' rows,
active spans, what the clock decides, when a standing moves, speed-zone passages and
which to measure again."""

from __future__ import annotations

from typing import Any

import pytest

from processor.domain.alerts import ActiveSpan
from processor.domain.config import Geofence, LineGeometry, PolygonGeometry, Stage
from processor.domain.results import PenaltyIn, RankInput, TimingRecordIn
from processor.domain.standing import (
    active_spans,
    any_of,
    clock_decides,
    one_per_entry,
    only,
    penalty_inputs,
    settles_now,
    standing_moved,
    timing_inputs,
    zone_visits,
)

OPENS, CLOSES = 1_000_000, 9_000_000
SS1 = Stage(1, 1, "SS1", 1, OPENS, CLOSES, max_time_s=600)
SS2 = Stage(2, 1, "SS2", 2, OPENS, None)
START, FINISH, ZONE, OTHER_ZONE = 10, 11, 12, 13
_LINE = LineGeometry(((25.0, 54.0), (25.001, 54.0)))
_RING = PolygonGeometry(
    (((25.0, 54.0), (25.001, 54.0), (25.001, 54.001), (25.0, 54.001), (25.0, 54.0)),)
)
FENCES = [
    Geofence(START, 1, 1, "start_line", "start", _LINE, 0, "forward"),
    Geofence(FINISH, 1, 1, "finish_line", "finish", _LINE, 9, "forward"),
    Geofence(ZONE, 1, 1, "speed_zone", "zone", _RING, 1, speed_limit_kmh=50.0),
    Geofence(OTHER_ZONE, 1, 1, "zone", "not a speed zone", _RING, 2),
    Geofence(20, 1, 2, "start_line", "start 2", _LINE, 0, "forward"),
]


def rec(fence: int, kind: str, at: int, key: str = "", source: str = "auto") -> TimingRecordIn:
    return TimingRecordIn(fence, kind, at, source, "valid", key or f"auto:{fence}:{at}")


# --- officials' rows --------------------------------------------------------------------


def test_an_officials_row_takes_over_the_automatic_row_of_its_key() -> None:
    auto = [rec(START, "start_line", 1_100_000, "k1"), rec(FINISH, "finish_line", 1_500_000, "k2")]
    manual: list[dict[str, Any]] = [
        {
            "key": "k2",
            "geofence": FINISH,
            "kind": "finish_line",
            "at_ms": 1_400_000,
            "status": "valid",
        },
        {
            "key": None,
            "geofence": START,
            "kind": "start_line",
            "at_ms": 1_000_500,
            "status": "void",
        },
    ]
    got = timing_inputs(auto, manual)
    assert got == [
        auto[0],
        TimingRecordIn(FINISH, "finish_line", 1_400_000, "manual", "valid", "k2"),
        TimingRecordIn(START, "start_line", 1_000_500, "manual", "void", ""),
    ]
    assert timing_inputs(auto, []) == auto


def test_penalties_the_same_way() -> None:
    auto = [PenaltyIn("p1", "speeding", 10_000, "auto", "valid")]
    manual = [{"key": "p1", "kind": "speeding", "amount_ms": 0, "status": "rejected"}]
    assert penalty_inputs(auto, manual) == [PenaltyIn("p1", "speeding", 0, "manual", "rejected")]


def test_an_officials_result_replaces_the_automatic_one() -> None:
    auto = [RankInput(1, 1, "A", "finished", 100), RankInput(2, 2, "A", "finished", 90)]
    official = RankInput(2, 2, "A", "finished", 120)
    assert one_per_entry([*auto, official]) == [auto[0], official]


# --- active spans ---------------------------------------------------------------------------


def spans(records: dict[int, list[TimingRecordIn]], now: int = 2_000_000) -> list[ActiveSpan]:
    return active_spans([SS1, SS2], FENCES, 5, lambda s: records.get(s, []), now)


def test_from_the_start_to_the_finish() -> None:
    records = {1: [rec(START, "start_line", 1_100_000), rec(FINISH, "finish_line", 1_400_000)]}
    assert spans(records) == [ActiveSpan(1, 1_100_000, 1_400_000)]


def test_without_a_finish_until_out_of_time_or_the_close() -> None:
    assert spans({1: [rec(START, "start_line", 1_100_000)]}) == [
        ActiveSpan(1, 1_100_000, 1_100_000 + 600_000)
    ]
    late = {1: [rec(START, "start_line", 8_800_000)]}
    assert spans(late, now=8_900_000) == [ActiveSpan(1, 8_800_000, CLOSES)]
    # SS2 has no max time and no close: still on it.
    assert spans({2: [rec(20, "start_line", 1_200_000)]}) == [ActiveSpan(2, 1_200_000, None)]


def test_no_span_without_a_counted_start() -> None:
    assert spans({}) == []
    assert spans({1: [rec(START, "start_line", OPENS - 1)]}) == []  # before the stage opens


# --- the clock ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "start", "now", "decides"),
    [
        (None, None, CLOSES - 1, False),  # may still start
        (None, None, CLOSES, True),  # dns
        ("running", 1_100_000, 1_100_000 + 599_999, False),
        ("running", 1_100_000, 1_100_000 + 600_000, True),  # out of time: dnf
        ("running", 1_100_000, CLOSES, True),
        ("finished", 1_100_000, CLOSES + 1, False),
        ("dnf", 1_100_000, CLOSES + 1, False),
    ],
)
def test_what_the_clock_decides(
    status: str | None, start: int | None, now: int, decides: bool
) -> None:
    assert clock_decides(SS1, status, start, now) is decides


def test_a_stage_without_times_leaves_a_running_car_running() -> None:
    assert not clock_decides(SS2, "running", 1_100_000, 10**13)
    assert not clock_decides(SS2, None, None, 10**13)


# --- the standing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after", "moved"),
    [
        (None, ("running", None), False),  # a car starting
        (("running", None), ("running", None), False),  # a new split time
        (("running", None), ("finished", 300_000), True),
        (("finished", 300_000), ("finished", 300_000), False),  # same standing
        (("finished", 300_000), ("finished", 310_000), True),  # a penalty
        (("finished", 300_000), ("dnf", 300_000), True),
        (("finished", 300_000), None, True),  # deleted
        (("dnf", None), ("dns", None), False),
    ],
)
def test_only_a_finished_result_moves_the_standing(
    before: tuple[str, int | None] | None, after: tuple[str, int | None] | None, moved: bool
) -> None:
    assert standing_moved(before, after) is moved


# --- speed zones ---------------------------------------------------------------------------


def test_zone_visits_pair_each_entry_with_the_next_exit() -> None:
    fences = {g.id: g for g in FENCES}
    counted = [
        rec(ZONE, "zone_exit", 900),  # no entry before: ignored
        rec(ZONE, "zone_entry", 1_000),
        rec(OTHER_ZONE, "zone_entry", 1_100),  # not a speed zone
        rec(ZONE, "zone_exit", 2_000),
        rec(ZONE, "zone_entry", 3_000),  # still inside
        rec(99, "zone_exit", 3_500),  # unknown geofence
    ]
    assert zone_visits(counted, fences) == [(fences[ZONE], 1_000, 2_000)]


def test_remeasure_what_any_request_asked() -> None:
    def late(fence: int, exit_ms: int) -> bool:
        return exit_ms >= 5_000

    assert any_of([None, only([1])]) is None
    one = only([1])
    assert any_of([one]) is one
    both = any_of([one, late])
    assert both is not None
    assert both(1, 0)
    assert both(2, 5_000)
    assert not both(2, 4_999)


def test_which_changed_records_settle_their_pair_now() -> None:
    assert all(settles_now(k) for k in ("start_line", "split_line", "finish_line", "zone_exit"))
    assert not any(settles_now(k) for k in ("waypoint", "zone_entry"))

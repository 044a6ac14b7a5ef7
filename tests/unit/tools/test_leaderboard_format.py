"""The leaderboard's formatting: durations and gaps truncated to the tenth, times of day in
the event's zone, stored splits read leniently, and a board rendered without a database."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from processor.domain.rows import SplitRow
from processor.tools.leaderboard import (
    EventBoard,
    EventBoardRow,
    EventStage,
    SplitColumn,
    SplitTime,
    StageBoard,
    StageCell,
    StageRow,
    event_zone,
    format_duration,
    format_gap,
    format_time_of_day,
    parse_splits,
    render_text,
    to_json,
)

VILNIUS = ZoneInfo("Europe/Vilnius")


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0:00.0"),
        (99, "0:00.0"),
        (999, "0:00.9"),  # truncated, never rounded up
        (12_345, "0:12.3"),
        (754_500, "12:34.5"),
        (3_599_999, "59:59.9"),
        (3_600_000, "1:00:00.0"),
        (3_723_456, "1:02:03.4"),
        (36_000_000 * 3, "30:00:00.0"),
        (-1_500, "-0:01.5"),
        (None, ""),
    ],
)
def test_durations(ms: int | None, text: str) -> None:
    assert format_duration(ms) == text


@given(st.integers(0, 10**9))
def test_a_duration_reads_back_to_its_tenth(ms: int) -> None:
    parts = re.fullmatch(r"(?:(\d+):)?(\d+):(\d\d)\.(\d)", format_duration(ms))
    assert parts is not None
    hours, minutes, seconds, tenths = (int(p or 0) for p in parts.groups())
    assert minutes < 60 or hours == 0
    assert ((hours * 60 + minutes) * 60 + seconds) * 1000 + tenths * 100 == ms // 100 * 100


def test_gaps() -> None:
    assert format_gap(None) == ""
    assert format_gap(0) == "+0:00.0"
    assert format_gap(20_050) == "+0:20.0"
    assert format_gap(3_723_456) == "+1:02:03.4"


def test_times_of_day_follow_the_zone_and_its_summer_time() -> None:
    summer = int(datetime(2026, 5, 1, 6, 0, 1, 99_000, tzinfo=UTC).timestamp() * 1000)
    winter = int(datetime(2026, 1, 10, 6, 0, 1, 950_000, tzinfo=UTC).timestamp() * 1000)
    assert format_time_of_day(summer, VILNIUS) == "09:00:01.0"
    assert format_time_of_day(winter, VILNIUS) == "08:00:01.9"
    assert format_time_of_day(summer, ZoneInfo("UTC")) == "06:00:01.0"
    assert format_time_of_day(None, VILNIUS) == ""


def test_an_unknown_zone_shows_utc() -> None:
    assert event_zone("Europe/Vilnius").key == "Europe/Vilnius"
    assert event_zone("Mars/Olympus").key == "UTC"
    assert event_zone("../etc").key == "UTC"


def test_splits_are_read_as_the_domain_stores_them() -> None:
    stored = [SplitRow(geofence=5, name="S1", at=1_777_615_259_123, elapsed_ms=61_400)]
    (split,) = parse_splits(msgspec.json.encode(stored).decode(), 1_777_615_197_723)
    assert split == SplitTime(5, "S1", 1_777_615_259_123, 61_400)


def test_stored_splits_are_read_leniently() -> None:
    doc = '[{"geofence": 5, "name": "S1", "at": 1500}, {"geofence": 6, "elapsed_ms": 700}]'
    assert parse_splits(doc, 1_000) == (
        SplitTime(5, "S1", 1500, 500),  # elapsed from the start when not stored
        SplitTime(6, "", None, 700),
    )
    assert parse_splits(doc, None)[0].elapsed_ms is None
    assert parse_splits(None, 0) == ()
    assert parse_splits('"not a list"', 0) == ()
    assert parse_splits("{oops", 0) == ()
    assert parse_splits('[{"name": "no geofence"}]', 0) == ()


def _row(entry: int, rank: int | None, total: int | None, ahead: int | None) -> StageRow:
    return StageRow(
        entry=entry,
        number=entry,
        crew=f"Crew {entry}",
        entry_class="R2",
        status="finished" if rank else "dnf",
        source="auto",
        rank=rank,
        class_rank=rank,
        start_at_ms=None,
        finish_at_ms=None,
        elapsed_ms=total,
        penalty_ms=0,
        total_ms=total,
        gap_leader_ms=None if total is None else total - 60_000,
        gap_ahead_ms=ahead,
        splits=(SplitTime(9, "S", None, 1_000),) if rank == 1 else (),
    )


def test_a_stage_board_renders_without_a_database() -> None:
    board = StageBoard(
        stage=1,
        stage_name="SS1",
        sequence=1,
        event=1,
        event_name="Rally",
        timezone="Nowhere/Invalid",
        splits=(SplitColumn(9, ""),),
        rows=(_row(1, 1, 60_000, None), _row(2, 2, 61_000, 1_000), _row(3, None, None, None)),
    )
    text = render_text(board)
    assert "times of day in UTC" in text
    assert "split 9" in text  # an unnamed split line is named by its id
    lines = {line.split("│")[2].strip(): line for line in text.splitlines() if "Crew" in line}
    assert "+" not in lines["1"]  # the leader has no gaps
    assert "0:01.0" in lines["1"]  # its split
    assert lines["2"].count("+0:01.0") == 2
    assert '"kind": "stage"' in to_json(board)


def test_an_event_board_names_the_stage_an_entry_missed() -> None:
    row = EventBoardRow(
        entry=4,
        number=4,
        crew="Crew 4",
        entry_class=None,
        rank=None,
        class_rank=None,
        total_ms=None,
        gap_leader_ms=None,
        gap_ahead_ms=None,
        stages_finished=0,
        reason="dns in stage 12",
        reason_status="dns",
        reason_stage=12,
        stages=(StageCell(12, "dns", None),),
    )
    board = EventBoard(1, "Rally", "UTC", (EventStage(12, "SS7 Night", 7),), (row,))
    text = render_text(board)
    assert "dns in SS7 Night" in text
    assert "DNS" in text

"""`processor leaderboard` over stored results: exact ranks, ties, gaps, class ranks,
splits, times of day in the event's zone, an official's row over the processor's, the
event classification, `--json`, `--watch` and a missing stage."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

from processor.cli import app
from processor.core.settings import Settings
from processor.domain.rows import SplitRow
from processor.tools.leaderboard import read_board, render_text, show_leaderboard

pytestmark = pytest.mark.integration

EVENT, SS1, SS2, SS3 = 9101, 9101, 9102, 9103
SPLIT1, SPLIT2 = 9101, 9102
A, B, C, D, E, F, G = range(9101, 9108)  # entry ids; car numbers 1 … 7
CLASSES = {A: "R2", B: "R5", C: "R2", D: None, E: "R5", F: "R2", G: "R5"}
T0 = datetime(2026, 5, 1, 6, 0, tzinfo=UTC)  # 09:00 in Vilnius (EEST, UTC+3)
LINE = '{"type": "LineString", "coordinates": [[25.0, 54.0], [25.001, 54.0]]}'


def at(ms: int) -> datetime:
    return T0 + timedelta(milliseconds=ms)


def splits(start_ms: int, *items: tuple[int, str, int]) -> str:
    """A `splits` document as the results writer stores it (`SplitRow`)."""
    t0 = int(T0.timestamp() * 1000) + start_ms
    rows = [SplitRow(geofence=g, name=n, at=t0 + e, elapsed_ms=e) for g, n, e in items]
    return msgspec.json.encode(rows).decode()


A_SPLITS = splits(0, (SPLIT1, "Split 1", 200_000), (SPLIT2, "Split 2", 400_000))
B_SPLITS = splits(60_000, (SPLIT2, "Split 2", 390_000))  # missed split 1
BAD_SPLITS = json.dumps("not a list")


# (stage, entry, start ms, elapsed, penalty, status, splits, source, rank)
RESULTS: list[tuple[Any, ...]] = [
    (SS1, A, 0, 600_000, 0, "finished", A_SPLITS, "auto", None),
    (SS1, B, 60_000, 590_000, 10_000, "finished", B_SPLITS, "auto", None),
    (SS1, C, 120_000, 3_723_456, 0, "finished", None, "auto", None),
    (SS1, D, 180_000, None, 0, "running", None, "auto", None),
    (SS1, E, 240_000, None, 0, "dnf", BAD_SPLITS, "auto", None),
    (SS1, F, 300_000, 700_000, 0, "finished", None, "auto", 3),  # corrected by an official:
    (SS1, F, 300_000, 620_000, 0, "finished", None, "manual", None),
    (SS2, A, 0, 500_000, 0, "finished", None, "auto", None),
    (SS2, B, 0, 500_000, 0, "finished", None, "auto", None),
    (SS2, F, 0, 470_000, 0, "finished", None, "auto", None),
    (SS2, C, 0, None, 0, "dnf", None, "auto", None),
    (SS2, E, None, None, 0, "dns", None, "auto", None),
]  # fmt: skip


@pytest.fixture
async def rally(db: asyncpg.Connection) -> AsyncIterator[None]:
    """An event of three stages (the third without results yet) and seven cars."""
    await _remove(db)
    tag = uuid.uuid4().hex[:8]
    await db.execute(
        "INSERT INTO public.events (id, name, starts_at, ends_at, timezone, status)"
        " VALUES ($1, 'Test Rally', $2, $3, 'Europe/Vilnius', 'live')",
        EVENT,
        T0,
        T0 + timedelta(days=1),
    )
    for i, (stage, name) in enumerate(((SS1, "SS1 Forest"), (SS2, "SS2 Lake"), (SS3, "SS3 Hill"))):
        await db.execute(
            "INSERT INTO public.stages (id, event, name, sequence, opens_at, closes_at, max_time_s)"
            " VALUES ($1, $2, $3, $4, $5, $6, 3600)",
            stage,
            EVENT,
            name,
            i + 1,
            T0 + timedelta(hours=2 * i),
            T0 + timedelta(hours=2 * i + 2),
        )
    # Split 2 is drawn first; its sequence puts it second.
    for fence, name, seq in ((SPLIT2, "Split 2", 2), (SPLIT1, "Split 1", 1)):
        await db.execute(
            "INSERT INTO public.geofences (id, event, stage, kind, name, geometry, direction,"
            " sequence) VALUES ($1, $2, $3, 'split_line', $4, $5::json, 'forward', $6)",
            fence,
            EVENT,
            SS1,
            name,
            LINE,
            seq,
        )
    for number, entry in enumerate((A, B, C, D, E, F, G), start=1):
        device = await db.fetchval(
            "INSERT INTO public.devices (imei, model) VALUES ($1, 'FMB920') RETURNING id",
            f"t{tag}{number}",
        )
        await db.execute(
            "INSERT INTO public.entries (id, event, device, number, crew_name, class)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            entry,
            EVENT,
            device,
            number,
            f"Crew {number}",
            CLASSES[entry],
        )
    for stage, entry, start, elapsed, penalty, status, split_doc, source, rank in RESULTS:
        finish = None if elapsed is None or start is None else at(start + elapsed)
        total = None if elapsed is None else elapsed + penalty
        await db.execute(
            "INSERT INTO public.stage_results (key, stage, entry, start_at, finish_at,"
            " elapsed_ms, penalty_ms, total_ms, status, rank, splits, source)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::json, $12)",
            f"test-leaderboard:{stage}:{entry}:{source}",
            stage,
            entry,
            None if start is None else at(start),
            finish,
            elapsed,
            penalty,
            total,
            status,
            rank,
            split_doc,
            source,
        )
    try:
        yield
    finally:
        await _remove(db)


async def _remove(db: asyncpg.Connection) -> None:
    stages = [SS1, SS2, SS3]
    await db.execute("DELETE FROM public.stage_results WHERE stage = ANY($1::int[])", stages)
    devices = await db.fetch("SELECT device FROM public.entries WHERE event = $1", EVENT)
    await db.execute("DELETE FROM public.entries WHERE event = $1", EVENT)
    await db.execute(
        "DELETE FROM public.devices WHERE id = ANY($1::int[])", [r["device"] for r in devices]
    )
    await db.execute("DELETE FROM public.geofences WHERE event = $1", EVENT)
    await db.execute("DELETE FROM public.stages WHERE event = $1", EVENT)
    await db.execute("DELETE FROM public.events WHERE id = $1", EVENT)


def cells(text: str) -> dict[str, list[str]]:
    """Table rows by car number: the cells between the box-drawing separators."""
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in re.split(r"[│┃]", line)[1:-1]]
        if len(parts) > 2 and parts[1].isdigit():
            rows[parts[1]] = parts
    return rows


async def invoke(settings: Settings, monkeypatch: pytest.MonkeyPatch, *args: str) -> Result:
    for key in [k for k in os.environ if k.startswith("PROCESSOR_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PROCESSOR_DATABASE_URL", settings.database_url.get_secret_value())
    monkeypatch.setenv("PROCESSOR_LOG_FORMAT", "json")
    # The command runs its own event loop: give it a thread.
    return await asyncio.to_thread(CliRunner().invoke, app, ["leaderboard", *args])


@pytest.mark.usefixtures("rally")
async def test_stage_board_ranks_ties_gaps_and_splits(db: asyncpg.Connection) -> None:
    board = await read_board(db, stage=SS1, event=None)
    text = render_text(board, width=240)
    assert "Test Rally · SS1 Forest (stage 9101)" in text
    assert "times of day in Europe/Vilnius" in text
    header = next(line for line in text.splitlines() if "gap leader" in line)
    assert header.index("Split 1") < header.index("Split 2")
    rows = cells(text)
    # #, no., crew, class, cls #, status, start, finish (Vilnius time of day)
    assert rows["1"][:8] == ["1", "1", "Crew 1", "R2", "1", "finished", "09:00:00.0", "09:10:00.0"]
    assert rows["2"][:8] == ["1", "2", "Crew 2", "R5", "1", "finished", "09:01:00.0", "09:10:50.0"]
    assert rows["6"][:8] == ["3", "6", "Crew 6", "R2", "2", "finished", "09:05:00.0", "09:15:20.0"]
    assert rows["3"][:8] == ["4", "3", "Crew 3", "R2", "3", "finished", "09:02:00.0", "10:04:03.4"]
    assert rows["4"][:8] == ["", "4", "Crew 4", "", "", "running", "09:03:00.0", ""]
    assert rows["5"][:8] == ["", "5", "Crew 5", "R5", "", "dnf", "09:04:00.0", ""]
    # elapsed, penalty, total, gap leader, gap ahead, Split 1, Split 2
    assert rows["1"][8:] == ["10:00.0", "", "10:00.0", "", "", "3:20.0", "6:40.0"]
    assert rows["2"][8:] == ["9:50.0", "0:10.0", "10:00.0", "+0:00.0", "+0:00.0", "", "6:30.0"]
    assert rows["6"][8:] == ["10:20.0", "", "10:20.0", "+0:20.0", "+0:20.0", "", ""]
    assert rows["3"][8:] == ["1:02:03.4", "", "1:02:03.4", "+52:03.4", "+51:43.4", "", ""]
    assert rows["4"][8:] == rows["5"][8:] == ["", "", "", "", "", "", ""]
    assert "7" not in rows  # no result on this stage: not listed
    order = [line.split("│")[2].strip() for line in text.splitlines() if line.count("│") > 5]
    assert order == ["1", "2", "6", "3", "4", "5"]


@pytest.mark.usefixtures("rally")
async def test_event_board_classifies_and_explains(db: asyncpg.Connection) -> None:
    text = render_text(await read_board(db, stage=None, event=EVENT), width=240)
    assert "Test Rally · classification" in text
    rows = cells(text)
    # #, no., crew, class, cls #, total, gap leader, gap ahead, SS1, SS2, SS3, not classified
    assert rows["6"][:5] == ["1", "6", "Crew 6", "R2", "1"]
    assert rows["6"][5:] == ["18:10.0", "", "", "10:20.0", "7:50.0", "", ""]
    assert rows["1"][:5] == ["2", "1", "Crew 1", "R2", "2"]
    assert rows["1"][5:] == ["18:20.0", "+0:10.0", "+0:10.0", "10:00.0", "8:20.0", "", ""]
    assert rows["2"][:5] == ["2", "2", "Crew 2", "R5", "1"]
    assert rows["2"][5:] == ["18:20.0", "+0:10.0", "+0:00.0", "10:00.0", "8:20.0", "", ""]
    assert rows["3"][5:] == ["", "", "", "1:02:03.4", "DNF", "", "dnf in SS2 Lake"]
    assert rows["4"][5:] == ["", "", "", "RUNNING", "", "", "running in SS1 Forest"]
    assert rows["5"][5:] == ["", "", "", "DNF", "DNS", "", "dnf in SS1 Forest"]
    assert rows["7"][5:] == ["", "", "", "", "", "", "no result in SS1 Forest"]
    order = [line.split("│")[2].strip() for line in text.splitlines() if line.count("│") > 5]
    assert order == ["6", "1", "2", "3", "4", "5", "7"]


@pytest.mark.usefixtures("rally")
async def test_cli_json_for_a_stage_and_an_event(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = await invoke(settings, monkeypatch, "--stage", str(SS1), "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert (doc["kind"], doc["stage"], doc["timezone"]) == ("stage", SS1, "Europe/Vilnius")
    assert doc["splits"] == [
        {"geofence": SPLIT1, "name": "Split 1"},
        {"geofence": SPLIT2, "name": "Split 2"},
    ]
    keys = ("rank", "class_rank", "total_ms", "gap_leader_ms", "gap_ahead_ms")
    got = {r["number"]: tuple(r[k] for k in keys) for r in doc["rows"]}
    assert got == {
        1: (1, 1, 600_000, 0, None),
        2: (1, 1, 600_000, 0, 0),
        6: (3, 2, 620_000, 20_000, 20_000),  # the official's row, not the processor's
        3: (4, 3, 3_723_456, 3_123_456, 3_103_456),
        4: (None, None, None, None, None),
        5: (None, None, None, None, None),
    }
    first = doc["rows"][0]
    assert first["start_at_ms"] == int(T0.timestamp() * 1000)
    assert first["splits"][1] == {
        "geofence": SPLIT2,
        "name": "Split 2",
        "at_ms": first["start_at_ms"] + 400_000,
        "elapsed_ms": 400_000,
    }
    assert doc["rows"][-1]["splits"] == []  # a malformed splits document: none shown

    result = await invoke(settings, monkeypatch, "--event", str(EVENT), "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["kind"] == "event"
    assert [s["id"] for s in doc["stages"]] == [SS1, SS2, SS3]
    summary = [
        (r["number"], r["rank"], r["total_ms"], r["stages_finished"], r["reason"])
        for r in doc["rows"]
    ]
    assert summary == [
        (6, 1, 1_090_000, 2, None),
        (1, 2, 1_100_000, 2, None),
        (2, 2, 1_100_000, 2, None),
        (3, None, None, 1, f"dnf in stage {SS2}"),
        (4, None, None, 0, f"running in stage {SS1}"),
        (5, None, None, 0, f"dnf in stage {SS1}"),
        (7, None, None, 0, f"no result in stage {SS1}"),
    ]


async def test_cli_missing_stage_and_wrong_options(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, db: asyncpg.Connection
) -> None:
    result = await invoke(settings, monkeypatch, "--stage", "987654")
    assert result.exit_code == 1
    assert "no stage 987654" in result.output
    result = await invoke(settings, monkeypatch, "--event", "987654", "--json")
    assert result.exit_code == 1
    assert "no event 987654" in result.output
    result = await invoke(settings, monkeypatch, "--stage", "1", "--event", "1")
    assert result.exit_code == 2
    assert "either --stage or --event" in result.output


@pytest.mark.usefixtures("rally")
async def test_watch_appends_one_board_per_interval_when_piped(settings: Settings) -> None:
    out = io.StringIO()
    console = Console(file=out, width=200)  # not a terminal: no live redraw
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(
            show_leaderboard(settings, console, stage=SS1, watch_s=0.5, as_json=True), 1.3
        )
    boards = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(boards) >= 2
    assert all(b["stage"] == SS1 and len(b["rows"]) == 6 for b in boards)

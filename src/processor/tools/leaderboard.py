"""`processor leaderboard`: stored stage results as race control reads them.

It only reads (`public.stage_results` with `entries`, `stages`, `events`, `geofences`),
so it can run anywhere the database answers, beside the processor or after it.

Ranks and gaps are computed here with `rank_stage` from each row's `status` and
`total_ms`, not read from the stored columns: the board is right even while a stored
rank lags a correction, and it works on a schema without the gap columns. An official's
row (`source = manual`) keeps its own rank and class rank (ADR 0004). When a stage has
both an automatic and a manual row for an entry, the manual one is the result.

Times are truncated to the tenth (rally timing never rounds up); times of day are in
the event's time zone (`events.timezone`, display only: ADR 0006).
"""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
import msgspec
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from processor.core.settings import Settings, redact_url
from processor.core.timeparse import datetime_ms, ms_to_datetime
from processor.domain.results import RankInput, classify_event, rank_stage

STATEMENT_TIMEOUT_MS = 5_000
# Unranked rows after the ranked ones, in this order (then by car number).
_STATUS_ORDER = {"finished": 0, "running": 1, "dnf": 2, "dns": 3}

STAGE_SQL = """
SELECT s.id, s.name, s.sequence, s.event, e.name AS event_name, e.timezone
FROM public.stages s JOIN public.events e ON e.id = s.event
WHERE s.id = $1
"""

EVENT_SQL = "SELECT id, name, timezone FROM public.events WHERE id = $1"

EVENT_STAGES_SQL = """
SELECT id, name, sequence FROM public.stages WHERE event = $1 ORDER BY sequence, id
"""

EVENT_ENTRIES_SQL = """
SELECT id, number, crew_name, class FROM public.entries WHERE event = $1
"""

SPLIT_LINES_SQL = """
SELECT id, name FROM public.geofences
WHERE stage = $1 AND kind = 'split_line' ORDER BY sequence, id
"""

# One row per (stage, entry): an official's row over the processor's, then the newest.
RESULTS_SQL = """
SELECT DISTINCT ON (r.stage, r.entry)
    r.stage, r.entry, r.start_at, r.finish_at, r.elapsed_ms, r.penalty_ms, r.total_ms,
    r.status, r.rank, r.class_rank, r.splits::text AS splits, r.source,
    n.number, n.crew_name, n.class
FROM public.stage_results r JOIN public.entries n ON n.id = r.entry
WHERE r.stage = ANY($1::int[])
ORDER BY r.stage, r.entry, (r.source = 'manual') DESC, r.id DESC
"""


class LeaderboardError(Exception):
    """Nothing to show: the stage or event does not exist."""


# -- the boards --------------------------------------------------------------------


class SplitColumn(msgspec.Struct, frozen=True):
    geofence: int
    name: str


class SplitTime(msgspec.Struct, frozen=True):
    geofence: int
    name: str
    at_ms: int | None
    elapsed_ms: int | None


class StageRow(msgspec.Struct, frozen=True):
    entry: int
    number: int
    crew: str
    entry_class: str | None
    status: str
    source: str
    rank: int | None
    class_rank: int | None
    start_at_ms: int | None
    finish_at_ms: int | None
    elapsed_ms: int | None
    penalty_ms: int
    total_ms: int | None
    gap_leader_ms: int | None
    gap_ahead_ms: int | None
    splits: tuple[SplitTime, ...]


class StageBoard(msgspec.Struct, frozen=True, tag_field="kind", tag="stage"):
    stage: int
    stage_name: str
    sequence: int
    event: int
    event_name: str
    timezone: str
    splits: tuple[SplitColumn, ...]  # the columns, in road order
    rows: tuple[StageRow, ...]


class StageCell(msgspec.Struct, frozen=True):
    stage: int
    status: str
    total_ms: int | None


class EventBoardRow(msgspec.Struct, frozen=True):
    entry: int
    number: int
    crew: str
    entry_class: str | None
    rank: int | None
    class_rank: int | None
    total_ms: int | None
    gap_leader_ms: int | None
    gap_ahead_ms: int | None
    stages_finished: int
    reason: str | None  # why not classified, e.g. "dnf in stage 12"
    reason_status: str | None  # its status in the first stage it did not finish…
    reason_stage: int | None  # …or `missing`: no result there
    stages: tuple[StageCell, ...]


class EventStage(msgspec.Struct, frozen=True):
    id: int
    name: str
    sequence: int


class EventBoard(msgspec.Struct, frozen=True, tag_field="kind", tag="event"):
    event: int
    event_name: str
    timezone: str
    stages: tuple[EventStage, ...]
    rows: tuple[EventBoardRow, ...]


Board = StageBoard | EventBoard


class _Outcome(msgspec.Struct, frozen=True):
    stage: int
    entry: int
    status: str
    total_ms: int | None


class _StoredSplit(msgspec.Struct, frozen=True):
    """A split as `stage_results.splits` stores it (`processor.domain.rows.SplitRow`)."""

    geofence: int
    name: str = ""
    at_ms: int | None = msgspec.field(default=None, name="at")
    elapsed_ms: int | None = None


class _Entry(msgspec.Struct, frozen=True):
    number: int
    crew: str
    entry_class: str | None


# -- reading -----------------------------------------------------------------------


async def read_board(conn: asyncpg.Connection, *, stage: int | None, event: int | None) -> Board:
    """The stage board (`stage`) or the event board (`event`): exactly one of them."""
    if (stage is None) == (event is None):
        raise ValueError("give a stage or an event")
    if stage is not None:
        return await read_stage_board(conn, stage)
    assert event is not None
    return await read_event_board(conn, event)


async def read_stage_board(conn: asyncpg.Connection, stage_id: int) -> StageBoard:
    info = await conn.fetchrow(STAGE_SQL, stage_id)
    if info is None:
        raise LeaderboardError(f"no stage {stage_id}")
    records = await conn.fetch(RESULTS_SQL, [stage_id])
    columns = [SplitColumn(r["id"], r["name"]) for r in await conn.fetch(SPLIT_LINES_SQL, stage_id)]
    rows = _stage_rows(records)
    known = {c.geofence for c in columns}
    extra = {s.geofence: s.name for row in rows for s in row.splits if s.geofence not in known}
    columns.extend(SplitColumn(g, extra[g]) for g in sorted(extra))
    return StageBoard(
        stage=info["id"],
        stage_name=info["name"],
        sequence=info["sequence"],
        event=info["event"],
        event_name=info["event_name"],
        timezone=info["timezone"] or "UTC",
        splits=tuple(columns),
        rows=tuple(rows),
    )


def _stage_rows(records: Sequence[asyncpg.Record]) -> list[StageRow]:
    rankings = rank_stage(
        [
            RankInput(r["entry"], r["number"], r["class"], r["status"], r["total_ms"])
            for r in records
        ]
    )
    rows: list[StageRow] = []
    for r in records:
        ranking = rankings[r["entry"]]
        rank, class_rank = ranking.rank, ranking.class_rank
        if r["source"] == "manual" and r["rank"] is not None:  # the officials' own ranks
            rank, class_rank = r["rank"], r["class_rank"]
        start_ms = _ms(r["start_at"])
        rows.append(
            StageRow(
                entry=r["entry"],
                number=r["number"],
                crew=r["crew_name"],
                entry_class=r["class"],
                status=r["status"],
                source=r["source"],
                rank=rank,
                class_rank=class_rank,
                start_at_ms=start_ms,
                finish_at_ms=_ms(r["finish_at"]),
                elapsed_ms=r["elapsed_ms"],
                penalty_ms=r["penalty_ms"],
                total_ms=r["total_ms"],
                gap_leader_ms=ranking.gap_leader_ms,
                gap_ahead_ms=ranking.gap_ahead_ms,
                splits=parse_splits(r["splits"], start_ms),
            )
        )
    rows.sort(key=_listing_order)
    return rows


def _listing_order(row: StageRow) -> tuple[int, int, int, int]:
    if row.rank is not None:
        return (0, row.rank, row.number, row.entry)
    return (1, _STATUS_ORDER.get(row.status, len(_STATUS_ORDER)), row.number, row.entry)


def parse_splits(text: str | None, start_ms: int | None) -> tuple[SplitTime, ...]:
    """The stored `splits` JSON; a malformed document shows no splits rather than no board."""
    if not text:
        return ()
    try:
        stored = msgspec.json.decode(text, type=list[_StoredSplit])
    except (msgspec.DecodeError, msgspec.ValidationError):
        return ()
    splits = []
    for s in stored:
        elapsed = s.elapsed_ms
        if elapsed is None and s.at_ms is not None and start_ms is not None:
            elapsed = s.at_ms - start_ms
        splits.append(SplitTime(s.geofence, s.name, s.at_ms, elapsed))
    return tuple(splits)


async def read_event_board(conn: asyncpg.Connection, event_id: int) -> EventBoard:
    info = await conn.fetchrow(EVENT_SQL, event_id)
    if info is None:
        raise LeaderboardError(f"no event {event_id}")
    stages = [
        EventStage(r["id"], r["name"], r["sequence"])
        for r in await conn.fetch(EVENT_STAGES_SQL, event_id)
    ]
    records = await conn.fetch(RESULTS_SQL, [s.id for s in stages])
    entries = {
        r["id"]: _Entry(r["number"], r["crew_name"], r["class"])
        for r in await conn.fetch(EVENT_ENTRIES_SQL, event_id)
    }
    for r in records:  # an entry of another event with a result here still shows
        entries.setdefault(r["entry"], _Entry(r["number"], r["crew_name"], r["class"]))
    outcomes = [_Outcome(r["stage"], r["entry"], r["status"], r["total_ms"]) for r in records]
    return EventBoard(
        event=info["id"],
        event_name=info["name"],
        timezone=info["timezone"] or "UTC",
        stages=tuple(stages),
        rows=tuple(_event_rows([s.id for s in stages], outcomes, entries)),
    )


def _event_rows(
    stage_ids: Sequence[int], outcomes: Sequence[_Outcome], entries: dict[int, _Entry]
) -> list[EventBoardRow]:
    classified = classify_event(
        stage_ids, outcomes, entries=entries, numbers={e: v.number for e, v in entries.items()}
    )
    # Class ranks over the event: the classified cars ranked on their summed totals.
    classes = rank_stage(
        [
            RankInput(
                c.entry,
                entries[c.entry].number,
                entries[c.entry].entry_class,
                "finished",
                c.total_ms,
            )
            for c in classified
            if c.rank is not None
        ]
    )
    cells: dict[int, list[StageCell]] = {}
    order = {s: i for i, s in enumerate(stage_ids)}
    for o in sorted(outcomes, key=lambda o: order[o.stage]):
        cells.setdefault(o.entry, []).append(StageCell(o.stage, o.status, o.total_ms))
    rows = []
    for c in classified:
        entry = entries[c.entry]
        class_ranking = classes.get(c.entry)
        rows.append(
            EventBoardRow(
                entry=c.entry,
                number=entry.number,
                crew=entry.crew,
                entry_class=entry.entry_class,
                rank=c.rank,
                class_rank=None if class_ranking is None else class_ranking.class_rank,
                total_ms=c.total_ms,
                gap_leader_ms=c.gap_leader_ms,
                gap_ahead_ms=c.gap_ahead_ms,
                stages_finished=c.stages_finished,
                reason=c.reason,
                reason_status=c.reason_status,
                reason_stage=c.reason_stage,
                stages=tuple(cells.get(c.entry, ())),
            )
        )
    return rows


def _ms(value: datetime | None) -> int | None:
    return None if value is None else datetime_ms(value)


# -- formatting --------------------------------------------------------------------


def format_duration(ms: int | None) -> str:
    """`12:34.5`, `1:02:03.4` (truncated to the tenth); empty for no value."""
    if ms is None:
        return ""
    sign = "-" if ms < 0 else ""
    hours, rest = divmod(abs(ms) // 100, 36_000)
    minutes, rest = divmod(rest, 600)
    seconds, tenths = divmod(rest, 10)
    if hours:
        return f"{sign}{hours}:{minutes:02d}:{seconds:02d}.{tenths}"
    return f"{sign}{minutes}:{seconds:02d}.{tenths}"


def format_gap(ms: int | None) -> str:
    """`+0:01.2`; empty for no value (the first car listed has no car ahead)."""
    return "" if ms is None else f"+{format_duration(ms)}"


def format_time_of_day(ms: int | None, zone: ZoneInfo) -> str:
    """`08:01:02.3` in the event's zone (truncated to the tenth)."""
    if ms is None:
        return ""
    local = ms_to_datetime(ms).astimezone(zone)
    return local.strftime("%H:%M:%S") + f".{ms % 1000 // 100}"


def event_zone(name: str) -> ZoneInfo:
    """The event's zone; an unknown name falls back to UTC (a display must not fail)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _rank(value: int | None) -> str:
    return "" if value is None else str(value)


# -- rendering ---------------------------------------------------------------------


def render(board: Board, taken_at: datetime | None = None) -> RenderableType:
    table = render_stage(board) if isinstance(board, StageBoard) else render_event(board)
    if taken_at is None:
        return table
    stamp = Text(f"as of {taken_at.astimezone(UTC).strftime('%H:%M:%S')} UTC", style="dim")
    return Group(table, stamp)


def render_stage(board: StageBoard) -> Table:
    zone = event_zone(board.timezone)
    table = Table(
        title=f"{board.event_name} · {board.stage_name} (stage {board.stage})",
        caption=f"times of day in {zone.key}",
        title_justify="left",
        caption_justify="left",
    )
    for header in ("#", "no.", "crew", "class", "cls #", "status", "start", "finish"):
        table.add_column(header, no_wrap=header != "crew", justify=_justify(header))
    for header in ("elapsed", "penalty", "total", "gap leader", "gap ahead"):
        table.add_column(header, no_wrap=True, justify="right")
    for column in board.splits:
        table.add_column(column.name or f"split {column.geofence}", no_wrap=True, justify="right")
    for row in board.rows:
        by_fence = {s.geofence: s for s in row.splits}
        leader = row.rank is not None and row.gap_ahead_ms is None
        table.add_row(
            _rank(row.rank),
            str(row.number),
            row.crew,
            row.entry_class or "",
            _rank(row.class_rank),
            row.status,
            format_time_of_day(row.start_at_ms, zone),
            format_time_of_day(row.finish_at_ms, zone),
            format_duration(row.elapsed_ms),
            format_duration(row.penalty_ms) if row.penalty_ms else "",
            format_duration(row.total_ms),
            "" if leader else format_gap(row.gap_leader_ms),
            format_gap(row.gap_ahead_ms),
            *(
                format_duration(by_fence[c.geofence].elapsed_ms) if c.geofence in by_fence else ""
                for c in board.splits
            ),
        )
    return table


def render_event(board: EventBoard) -> Table:
    table = Table(title=f"{board.event_name} · classification", title_justify="left")
    for header in ("#", "no.", "crew", "class", "cls #"):
        table.add_column(header, no_wrap=header != "crew", justify=_justify(header))
    for header in ("total", "gap leader", "gap ahead"):
        table.add_column(header, no_wrap=True, justify="right")
    for stage in board.stages:
        table.add_column(stage.name, no_wrap=True, justify="right")
    table.add_column("not classified")
    names = {s.id: s.name for s in board.stages}
    for row in board.rows:
        cells = {c.stage: c for c in row.stages}
        leader = row.rank is not None and row.gap_ahead_ms is None
        reason = row.reason or ""
        if row.reason_stage in names:  # name the stage, not its id
            status = "no result" if row.reason_status == "missing" else row.reason_status
            reason = f"{status} in {names[row.reason_stage]}"
        table.add_row(
            _rank(row.rank),
            str(row.number),
            row.crew,
            row.entry_class or "",
            _rank(row.class_rank),
            format_duration(row.total_ms),
            "" if leader else format_gap(row.gap_leader_ms),
            format_gap(row.gap_ahead_ms),
            *(_cell(cells.get(s.id)) for s in board.stages),
            reason,
        )
    return table


def _cell(cell: StageCell | None) -> str:
    if cell is None:
        return ""
    if cell.status == "finished":
        return format_duration(cell.total_ms)
    return cell.status.upper()


def _justify(header: str) -> Literal["left", "right"]:
    return "right" if header in ("#", "no.", "cls #") else "left"


def to_json(board: Board, *, indent: int = 2) -> str:
    encoded = msgspec.json.encode(board)
    return msgspec.json.format(encoded, indent=indent).decode()


# -- the command -------------------------------------------------------------------


async def fetch_board(settings: Settings, *, stage: int | None, event: int | None) -> Board:
    url = settings.database_url.get_secret_value()
    conn = await asyncpg.connect(
        url,
        timeout=min(settings.db_connect_timeout_s, 5),
        command_timeout=STATEMENT_TIMEOUT_MS / 1000 + 2,
        server_settings={
            "application_name": "processor-leaderboard",
            "statement_timeout": str(STATEMENT_TIMEOUT_MS),
        },
    )
    try:
        return await read_board(conn, stage=stage, event=event)
    finally:
        await conn.close()


async def show_leaderboard(
    settings: Settings,
    console: Console,
    *,
    stage: int | None = None,
    event: int | None = None,
    watch_s: float | None = None,
    as_json: bool = False,
) -> int:
    """One board (exit 1 when it cannot be read), or a fresh one every `watch_s` until
    Ctrl-C: while watching, a failed read is shown and retried (race control keeps the
    screen open through a database restart).

    Piped, `--watch` appends one board per interval (one JSON line each with `--json`).
    """
    url = redact_url(settings.database_url.get_secret_value())
    if watch_s is None:
        view = await _view(settings, url, stage=stage, event=event)
        if isinstance(view, Text):
            sys.stderr.write(f"{view.plain}\n")
            return 1
        _emit(console, view, as_json=as_json, indent=2)
        return 0
    if as_json or not console.is_terminal:
        while True:
            view = await _view(settings, url, stage=stage, event=event)
            if isinstance(view, Text):
                console.print(view)
            else:
                _emit(console, view, as_json=as_json, indent=0)
            await asyncio.sleep(watch_s)
    with Live(console=console, auto_refresh=False, transient=False) as live:
        while True:
            view = await _view(settings, url, stage=stage, event=event)
            shown = view if isinstance(view, Text) else render(view, datetime.now(UTC))
            live.update(shown, refresh=True)
            await asyncio.sleep(watch_s)


async def _view(
    settings: Settings, url: str, *, stage: int | None, event: int | None
) -> Board | Text:
    try:
        return await fetch_board(settings, stage=stage, event=event)
    except LeaderboardError as exc:
        return Text(str(exc), style="bold red")
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return Text(f"PostgreSQL at {url}: {_error(exc)}", style="bold red")


def _error(exc: BaseException) -> str:
    return (str(exc).strip() or type(exc).__name__)[:300]


def _emit(console: Console, board: Board, *, as_json: bool, indent: int) -> None:
    if as_json:
        # Straight to the file: JSON must not be wrapped or highlighted by rich.
        console.file.write(to_json(board, indent=indent) + "\n")
        console.file.flush()
    else:
        console.print(render(board))


def render_text(board: Board, width: int = 200) -> str:
    """The board as plain text (tests, logs)."""
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(render(board))
    return console.export_text()

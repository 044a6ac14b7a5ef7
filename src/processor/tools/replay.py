"""`processor replay` and `processor recompute`: the live timing code over a chosen range.

Rule 7 says every domain output is a function of stored positions and the Directus
configuration, so it can be recomputed at any time: after late data, a corrected
geofence, a rule change. These tools run exactly what the domain stage runs for a
committed notice — `read_range` for the fixes with their context, `timing_crossings` /
`write_timing` (which call `recompute_window`) for the records — over a range chosen by
hand instead of one a notice names. So a replay right after live processing finds no
difference (windows tile: see `processor.domain.timing`), and one after a geofence edit
finds exactly the records that edit changes.

- `--dry-run` plans in a read-only transaction and prints the difference against the
  stored records (added, removed, re-timed with old → new and Δ, updated details);
  nothing is written, not even an outbox event.
- Otherwise each device is written in one transaction holding the device's advisory
  lock (the one the live stage takes, so the two never interleave on a device), with
  `write_timing`: upserts under the same deterministic keys, stale automatic records
  removed, an outbox event per change. Manual records (`source = 'manual'`) are never
  touched, by the same statements that protect them live.

Positions are only read here, never written (rule 7: they are the source of truth).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import asyncpg
from rich.console import Console
from rich.table import Table

from processor.core.timeparse import format_ms
from processor.domain.config import ConfigError, DomainConfig, RowError, config_from_event_file
from processor.domain.geofences import GeofenceIndex
from processor.domain.timing import (
    DEFAULT_SETTINGS,
    Crossing,
    TimingSettings,
    affected_span,
    context_span,
)
from processor.domain_runner import store
from processor.domain_runner.config_source import ConfigSource, EntryRef, Snapshot
from processor.domain_runner.fixes import read_range
from processor.domain_runner.locks import lock_device
from processor.domain_runner.outputs import timing_crossings, timing_output, write_timing
from processor.domain_runner.race import Race
from processor.domain_runner.store import Output
from processor.storage.pool import DbConnection

# A long range is planned and written in chunks of this much time (each with its own
# context, so the result is the same as one pass): memory stays bounded by the chunk.
CHUNK_MS = 3_600_000
# A removed and an added record of the same entry, geofence and kind this close in time
# are one crossing re-timed (a moved gate often moves the crossing to the next segment,
# which changes the record's key).
PAIR_WINDOW_MS = 60_000
# The tables these tools read; Directus creates them (or the SQL fixture, in tests).
REQUIRED_TABLES = ("events", "stages", "geofences", "entries", "devices", "timing_records")

ChangeKind = Literal["added", "removed", "re-timed", "updated"]


class ReplayError(Exception):
    """A request that cannot be run (unknown device or stage, missing tables, …)."""


@dataclass(frozen=True, slots=True)
class Change:
    """One difference between the stored records and the recomputation."""

    change: ChangeKind
    stage: int
    entry: int
    geofence: int
    kind: str
    old_ms: int | None
    new_ms: int | None
    key: str  # the record's key (the new one when a re-timed crossing changed segment)
    old_key: str | None = None  # the key it replaces, when it changed

    @property
    def delta_ms(self) -> int | None:
        if self.old_ms is None or self.new_ms is None:
            return None
        return self.new_ms - self.old_ms

    @property
    def at_ms(self) -> int:
        return self.new_ms if self.new_ms is not None else self.old_ms or 0


@dataclass
class ReplayReport:
    """What a replay found (and, without `dry_run`, wrote)."""

    scope: str
    dry_run: bool
    span: tuple[int, int]
    devices: int = 0
    entries: int = 0
    fixes: int = 0
    records: int = 0  # automatic records the recomputation produces
    unchanged: int = 0
    manual: int = 0  # manual records met in the range: never changed
    changes: list[Change] = field(default_factory=list)
    config_errors: list[RowError] = field(default_factory=list)

    def count(self, change: ChangeKind) -> int:
        return sum(1 for c in self.changes if c.change == change)


async def missing_tables(conn: DbConnection) -> list[str]:
    """The Directus tables (schema `public`) these tools need and that do not exist."""
    found = await conn.fetch(
        "SELECT t FROM unnest($1::text[]) AS t WHERE to_regclass('public.' || t) IS NULL",
        list(REQUIRED_TABLES),
    )
    return [r["t"] for r in found]


async def load_snapshot(conn: DbConnection, geofences_file: Path | None = None) -> Snapshot:
    """The configuration the live stage would use now (read from the Directus tables).

    With `geofences_file` (an event file in the sample-event shape) its events, stages
    and geofences replace the tables' — a what-if layout; entries and devices still
    come from the tables, since stored records belong to those entries.
    """
    missing = await missing_tables(conn)
    if missing:
        raise ReplayError(
            f"the Directus tables {', '.join('public.' + t for t in missing)} do not exist: "
            "apply the Directus snapshot or src/processor/storage/directus_fixture.sql first"
        )
    snapshot = await ConfigSource(0.0).current(conn)
    if geofences_file is None:
        return snapshot
    try:
        config, errors = config_from_event_file(await asyncio.to_thread(geofences_file.read_bytes))
    except (OSError, ConfigError) as exc:
        raise ReplayError(f"--geofences {geofences_file}: {exc}") from None
    return dataclasses.replace(
        snapshot,
        config=config,
        index=GeofenceIndex.from_config(config) if config.geofences else None,
        errors=errors,
        fingerprint=f"file:{geofences_file}",
    )


def chunks(span: tuple[int, int], size_ms: int = CHUNK_MS) -> list[tuple[int, int]]:
    """[start, end) cut into consecutive half-open pieces of at most `size_ms`."""
    start, end = span
    return [(a, min(a + size_ms, end)) for a in range(start, end, size_ms)]


async def replay_device(
    conn: DbConnection,
    snapshot: Snapshot,
    device_id: str,
    span: tuple[int, int],
    *,
    entry_id: int | None = None,
    dry_run: bool = True,
    settings: TimingSettings = DEFAULT_SETTINGS,
) -> ReplayReport:
    """Recompute the records of `device_id`'s entries (or just `entry_id`) with
    `crossed_at` in `span` ([since, until))."""
    if span[0] >= span[1]:
        raise ReplayError("--since must be before --until")
    entries = snapshot.entries_of(device_id)
    if entry_id is not None:
        entries = [e for e in entries if e.id == entry_id]
        if not entries:
            raise ReplayError(f"entry {entry_id} is not carried by device {device_id}")
    if not entries:
        raise ReplayError(f"device {device_id} carries no entry of any event: nothing to time")
    scope = f"device {device_id}" + (f", entry {entry_id}" if entry_id is not None else "")
    report = ReplayReport(scope, dry_run, span, config_errors=list(snapshot.errors))
    await _run(conn, snapshot, {device_id: entries}, span, report, settings)
    return report


async def recompute_stage(
    conn: DbConnection,
    snapshot: Snapshot,
    stage_id: int,
    *,
    dry_run: bool = True,
    republish: bool = False,
    settings: TimingSettings = DEFAULT_SETTINGS,
) -> ReplayReport:
    """Recompute every entry of the stage's event over the stage's opens_at..closes_at.

    The range is the one a notice covering the whole stage would recompute
    (`affected_span`: the stage widened by the timing context), so crossings just
    outside the official times are reconsidered too.
    """
    stage = next((s for s in snapshot.config.stages if s.id == stage_id), None)
    if stage is None:
        skipped = [str(e) for e in snapshot.errors if e.collection == "stages"]
        hint = f" (skipped rows: {'; '.join(skipped)})" if skipped else ""
        raise ReplayError(f"no stage {stage_id} in the configuration{hint}")
    if stage.opens_at_ms is None or stage.closes_at_ms is None:
        raise ReplayError(
            f"stage {stage_id} has no opens_at/closes_at: use processor replay --device"
            " with --since/--until"
        )
    span = affected_span(stage.opens_at_ms, stage.closes_at_ms, settings)
    by_device: dict[str, list[EntryRef]] = {}
    for device_id, refs in snapshot.entries_by_device.items():
        mine = [e for e in refs if e.event == stage.event]
        if mine:
            by_device[device_id] = mine
    report = ReplayReport(
        f"stage {stage_id} ({stage.name})", dry_run, span, config_errors=list(snapshot.errors)
    )
    if republish and not dry_run:
        await forget_stage(conn, stage_id)
    await _run(conn, snapshot, by_device, span, report, settings)
    if not dry_run:
        # Every pair, not only those whose timing changed: a rule or a penalty may have.
        race = Race()
        moved = False
        for refs in by_device.values():
            for entry in refs:
                moved |= await race.settle_locked(conn, snapshot, stage_id, entry)
        if moved:
            async with conn.transaction():
                await race.rank(conn, snapshot, stage)
    return report


async def forget_stage(conn: DbConnection, stage_id: int) -> None:
    """`--republish`: drop the stage's automatic rows and the record of them, so the
    recompute writes every one again (after published rows were deleted by hand)."""
    async with conn.transaction():
        await conn.execute(
            "DELETE FROM telemetry.domain_outputs WHERE stage = $1"
            " AND collection IN ('timing_records', 'penalties', 'stage_results')",
            stage_id,
        )
        for table in ("timing_records", "penalties", "stage_results"):
            await conn.execute(
                f"DELETE FROM public.{table} WHERE stage = $1 AND source = 'auto'", stage_id
            )


async def _run(
    conn: DbConnection,
    snapshot: Snapshot,
    by_device: dict[str, list[EntryRef]],
    span: tuple[int, int],
    report: ReplayReport,
    settings: TimingSettings,
) -> None:
    report.devices = len(by_device)
    report.entries = sum(len(v) for v in by_device.values())
    if report.dry_run:
        # One consistent snapshot for the whole plan, and the database's word that
        # nothing is written.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            for device_id in sorted(by_device):
                await _device(
                    conn, snapshot, device_id, by_device[device_id], span, report, settings
                )
        return
    for device_id in sorted(by_device):
        async with conn.transaction():
            await lock_device(conn, device_id)  # the live stage's lock for this device
            await _device(conn, snapshot, device_id, by_device[device_id], span, report, settings)


async def _device(
    conn: DbConnection,
    snapshot: Snapshot,
    device_id: str,
    entries: list[EntryRef],
    span: tuple[int, int],
    report: ReplayReport,
    settings: TimingSettings,
) -> None:
    touched: set[tuple[int, int]] = set()
    for window in chunks(span):
        fixes = await read_range(conn, device_id, *context_span(*window, settings))
        report.fixes += sum(1 for p in fixes if window[0] <= p.ts_ms < window[1])
        for entry in entries:
            planned = timing_crossings(snapshot, entry, fixes, window, settings)
            await _compare(conn, snapshot, entry, planned, window, report)
            if not report.dry_run:
                d = await write_timing(conn, snapshot, entry, fixes, window, settings)
                touched |= {(o.stage, entry.id) for o, _ in d.changes() if o.stage is not None}
    # As the live stage does: the pairs whose timing changed are settled again.
    by_id = {e.id: e for e in entries}
    await Race().settle_many(conn, snapshot, [(s, by_id[e], None) for s, e in sorted(touched)])


async def _compare(
    conn: DbConnection,
    snapshot: Snapshot,
    entry: EntryRef,
    planned: list[Crossing],
    window: tuple[int, int],
    report: ReplayReport,
) -> None:
    """The changes `write_timing` makes for these crossings: the same diff against the
    stage's record of its outputs, in report form."""
    old = await store.of_entry(conn, "timing_records", entry.id, window[0], window[1])
    d = store.diff(old, [timing_output(snapshot, entry, c) for c in planned])
    # A row an official took over (same key, source manual) is never written: no change.
    manual_keys = {r["key"] for r in snapshot.manual.timing_records}
    d = store.Diff(
        *(
            [o for o in part if o.key not in manual_keys]
            for part in (d.created, d.updated, d.deleted)
        )
    )
    report.records += len(planned)
    report.manual += sum(
        1
        for r in snapshot.manual.timing_records
        if r["entry"] == entry.id and window[0] <= r["at_ms"] < window[1]
    )
    report.unchanged += len(planned) - len(d.created) - len(d.updated)
    for o in d.updated:
        before = old[o.key].data
        change: ChangeKind = (
            "re-timed" if before["crossed_at"] != o.data["crossed_at"] else "updated"
        )
        report.changes.append(
            Change(
                change,
                _int(o.stage),
                entry.id,
                o.data["geofence"],
                o.data["kind"],
                before["crossed_at"],
                o.data["crossed_at"],
                o.key,
            )
        )
    added = [_change("added", o, None, o.data["crossed_at"]) for o in d.created]
    removed = [_change("removed", o, o.data["crossed_at"], None) for o in d.deleted]
    report.changes.extend(pair_moves(removed, added))


def _change(kind: ChangeKind, o: Output, old_ms: int | None, new_ms: int | None) -> Change:
    return Change(
        kind,
        _int(o.stage),
        _int(o.entry),
        o.data["geofence"],
        o.data["kind"],
        old_ms,
        new_ms,
        o.key,
    )


def _int(value: int | None) -> int:
    assert value is not None  # timing records always have a stage and an entry
    return value


def pair_moves(removed: Iterable[Change], added: Iterable[Change]) -> list[Change]:
    """Removed + added records of one crossing (same entry, geofence and kind, less than
    `PAIR_WINDOW_MS` apart) become one re-timed change; closest pairs first."""
    groups: dict[tuple[int, int, str], tuple[list[Change], list[Change]]] = defaultdict(
        lambda: ([], [])
    )
    for c in removed:
        groups[(c.entry, c.geofence, c.kind)][0].append(c)
    for c in added:
        groups[(c.entry, c.geofence, c.kind)][1].append(c)
    out: list[Change] = []
    for olds, news in groups.values():
        candidates = sorted(
            (abs((n.new_ms or 0) - (o.old_ms or 0)), i, j)
            for i, o in enumerate(olds)
            for j, n in enumerate(news)
            if abs((n.new_ms or 0) - (o.old_ms or 0)) < PAIR_WINDOW_MS
        )
        used_old: set[int] = set()
        used_new: set[int] = set()
        for _, i, j in candidates:
            if i in used_old or j in used_new:
                continue
            used_old.add(i)
            used_new.add(j)
            o, n = olds[i], news[j]
            out.append(dataclasses.replace(n, change="re-timed", old_ms=o.old_ms, old_key=o.key))
        out.extend(o for i, o in enumerate(olds) if i not in used_old)
        out.extend(n for j, n in enumerate(news) if j not in used_new)
    return out


def _stage(c: Crossing) -> int:
    assert c.stage_id is not None  # timing_crossings keeps crossings of the entry's stages
    return c.stage_id


# --- output ---------------------------------------------------------------------------


def render_report(report: ReplayReport, snapshot: Snapshot, console: Console) -> None:
    """The differences as a table, then one summary line."""
    for error in report.config_errors:
        console.print(f"[yellow]configuration row skipped:[/] {error}")
    numbers = {e.id: e.number for refs in snapshot.entries_by_device.values() for e in refs}
    names = _geofence_names(snapshot.config)
    verb = "would change" if report.dry_run else "changed"
    console.print(
        f"{report.scope}: {format_ms(report.span[0])} .. {format_ms(report.span[1])}, "
        f"{report.devices} device(s), {report.entries} entry(ies), "
        f"{report.fixes} stored position(s)"
    )
    if report.changes:
        table = Table(title=f"timing records that {verb}")
        for column in ("change", "stage", "entry", "geofence", "kind", "old crossed_at"):
            table.add_column(column)
        table.add_column("new crossed_at")
        table.add_column("Δ ms", justify="right")
        order = {"removed": 0, "re-timed": 1, "updated": 2, "added": 3}
        for c in sorted(report.changes, key=lambda c: (c.stage, c.at_ms, c.entry, order[c.change])):
            style = {"added": "green", "removed": "red", "re-timed": "yellow"}.get(c.change, "")
            delta = c.delta_ms
            table.add_row(
                f"[{style}]{c.change}[/]" if style else c.change,
                str(c.stage),
                f"#{numbers[c.entry]} ({c.entry})" if c.entry in numbers else str(c.entry),
                names.get(c.geofence, str(c.geofence)),
                c.kind,
                format_ms(c.old_ms) if c.old_ms is not None else "",
                format_ms(c.new_ms) if c.new_ms is not None else "",
                f"{delta:+,d}" if delta is not None else "",
            )
        console.print(table)
    summary = (
        f"{report.count('added')} added, {report.count('removed')} removed, "
        f"{report.count('re-timed')} re-timed, {report.count('updated')} updated, "
        f"{report.unchanged} unchanged; {report.manual} manual record(s) in range, never touched"
    )
    if report.dry_run:
        console.print(f"{summary}. [bold]dry run[/]: nothing written")
    else:
        console.print(f"{summary}. written, one transaction per device")


def _geofence_names(config: DomainConfig) -> dict[int, str]:
    return {g.id: f"{g.name} ({g.id})" if g.name else str(g.id) for g in config.geofences}


# --- commands -------------------------------------------------------------------------


async def run_replay(
    database_url: str,
    console: Console,
    *,
    device_id: str | None = None,
    entry_id: int | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
    stage_id: int | None = None,
    geofences_file: Path | None = None,
    dry_run: bool = True,
    republish: bool = False,
) -> ReplayReport:
    """`processor replay` (a device and a range) or `processor recompute` (a stage)."""
    conn = await asyncpg.connect(database_url)
    try:
        snapshot = await load_snapshot(conn, geofences_file)
        if stage_id is not None:
            report = await recompute_stage(
                conn, snapshot, stage_id, dry_run=dry_run, republish=republish
            )
        elif device_id is None or since_ms is None or until_ms is None:
            raise ReplayError("a replay needs a device, --since and --until")
        else:
            report = await replay_device(
                conn, snapshot, device_id, (since_ms, until_ms), entry_id=entry_id, dry_run=dry_run
            )
    finally:
        await conn.close()
    render_report(report, snapshot, console)
    return report

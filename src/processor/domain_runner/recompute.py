"""Recompute: every output of a device's range or a stage, through the live code.

DESIGN rule 7 says every domain output is a function of stored positions, the
Directus configuration, officials' rows and the clock, so it can be recomputed at any
time: after late data, a corrected geofence, a rule change. `replay_device` and
`recompute_stage` run what the domain stage runs for a committed notice, over a range
chosen by hand: per device, in one-hour chunks with their context (`read_range`),
the entry's timing records (`timing_records.plan_timing`); then its alerts from the
range's start on (`alerts.plan_alerts`), each plan written as the full path writes it
(`store.apply`); then its pairs settled (`Race.settle_many`: penalties, results), and
at the end every stage whose standing moved ranked (`clock.rank_each`). Windows tile and the alerts'
locality contract holds, so right after live processing a recompute changes nothing,
and after a geofence edit exactly what that edit changes.

- `dry_run`: plans in one read-only, repeatable-read transaction and reports timing
  and alert differences (`ReplayReport`); nothing is written, not even an outbox
  event. Alerts are planned against the timing records as the recompute would leave
  them.
- Otherwise each device is one transaction in the order locks.py documents: the
  device's lock, then (in `settle_many`, called once) the stages' locks, then rows;
  each ranking is a transaction of its own. `--republish` first forgets the stage's
  rows under every device lock of its event, then the stage's lock.

Invariant: positions are only read here, never written (they are the source of
truth), and manual rows (`source = 'manual'`) are never touched, by the same
statements that protect them live.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from processor.domain.config import ConfigError, RowError, config_from_event_file
from processor.domain.geofences import GeofenceIndex
from processor.domain.rows import AlertRow, TimingFacts, TimingRow
from processor.domain.timing import DEFAULT_SETTINGS, TimingSettings, affected_span, context_span
from processor.domain_runner import store
from processor.domain_runner.alerts import SPAN_AND_ZONE_KINDS, alert_lookback_ms, plan_alerts
from processor.domain_runner.clock import rank_each
from processor.domain_runner.config_source import ConfigSource, EntryRef, Snapshot
from processor.domain_runner.fixes import read_range
from processor.domain_runner.full_path import LOOKBACK_MARGIN_MS
from processor.domain_runner.locks import lock_device, lock_devices, lock_stages
from processor.domain_runner.race import FOREVER_MS, Race
from processor.domain_runner.store import Diff, Output, Plan
from processor.domain_runner.tables import ALERTS, TIMING_FACTS, TIMING_RECORDS
from processor.domain_runner.timing_records import plan_timing
from processor.storage.pool import DbConnection

# A long range is planned and written in chunks of this much time (each with its own
# context, so the result is the same as one pass): memory stays bounded by the chunk.
CHUNK_MS = 3_600_000
# A removed and an added record of the same entry, geofence and kind this close in time
# are one crossing re-timed (a moved gate often moves the crossing to the next segment,
# which changes the record's key).
PAIR_WINDOW_MS = 60_000
# The tables the recompute reads; Directus creates them (or the SQL fixture, in tests).
REQUIRED_TABLES = ("events", "stages", "geofences", "entries", "devices", "timing_records")
# What `--republish` forgets of a stage: its automatic rows, published and recorded.
_REPUBLISHED = ("timing_records", "penalties", "stage_results")

ChangeKind = Literal["added", "removed", "re-timed", "updated"]
AlertChangeKind = Literal["added", "removed", "updated"]


class ReplayError(Exception):
    """A request that cannot be run (unknown device or stage, missing tables, …)."""


@dataclass(frozen=True, slots=True)
class Change:
    """One difference between the stored timing records and the recomputation."""

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


@dataclass(frozen=True, slots=True)
class AlertChange:
    """One difference between the stored alerts and the recomputation (the new alert's
    values; the old one's when removed)."""

    change: AlertChangeKind
    entry: int
    stage: int | None
    kind: str
    severity: str
    started_ms: int
    ended_ms: int | None
    key: str


@dataclass
class ReplayReport:
    """What a recompute found (and, without `dry_run`, wrote)."""

    scope: str
    dry_run: bool
    span: tuple[int, int]
    devices: int = 0
    entries: int = 0
    fixes: int = 0
    records: int = 0  # automatic records the recomputation produces
    unchanged: int = 0
    manual: int = 0  # manual records met in the range: never changed
    changes: list[Change] = field(default_factory=list)  # timing records
    alerts: list[AlertChange] = field(default_factory=list)
    config_errors: list[RowError] = field(default_factory=list)

    def count(self, change: ChangeKind) -> int:
        return sum(1 for c in self.changes if c.change == change)

    def count_alerts(self, change: AlertChangeKind) -> int:
        return sum(1 for c in self.alerts if c.change == change)


async def missing_tables(conn: DbConnection) -> list[str]:
    """The Directus tables (schema `public`) a recompute needs and that do not exist."""
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
    race: Race | None = None,
) -> ReplayReport:
    """Recompute the outputs of `device_id`'s entries (or just `entry_id`) from `span`
    ([since, until)): the records with `crossed_at` in it, the alerts from its start
    on, the pairs whose timing changed."""
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
    await _Job(snapshot, settings, race or Race(), span, report).run(conn, {device_id: entries})
    return report


async def recompute_stage(
    conn: DbConnection,
    snapshot: Snapshot,
    stage_id: int,
    *,
    dry_run: bool = True,
    republish: bool = False,
    settings: TimingSettings = DEFAULT_SETTINGS,
    race: Race | None = None,
) -> ReplayReport:
    """Recompute every entry of the stage's event over the stage's opens_at..closes_at,
    then every entry's penalties and result on the stage (a rule or a penalty may have
    changed, not only the timing), and the ranking.

    The range is the one a notice covering the whole stage would recompute
    (`affected_span`: the stage widened by the timing context), so crossings just
    outside the official times are reconsidered too.
    """
    stage = snapshot.config.stage(stage_id)
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
        await forget_stage(conn, stage_id, by_device)
    job = _Job(snapshot, settings, race or Race(), span, report, every_pair_of=stage_id)
    await job.run(conn, by_device)
    return report


async def forget_stage(
    conn: DbConnection, stage_id: int, by_device: Mapping[str, Iterable[EntryRef]]
) -> None:
    """`--republish`: drop the stage's automatic rows and the record of them, so the
    recompute writes every one again (after published rows were deleted by hand). Its
    alerts are forgotten in the record only: written again, their published rows keep
    the officials' status (acknowledged, dismissed)."""
    async with conn.transaction():
        await lock_devices(conn, by_device)
        await lock_stages(conn, [stage_id])
        await conn.execute(
            "DELETE FROM telemetry.domain_outputs WHERE stage = $1"
            " AND collection = ANY($2::text[])",
            stage_id,
            [*_REPUBLISHED, "alerts"],
        )
        for table in _REPUBLISHED:
            await conn.execute(
                f"DELETE FROM public.{table} WHERE stage = $1 AND source = 'auto'", stage_id
            )


@dataclass
class _Job:
    """One recompute: its configuration, range and report; `every_pair_of`: a stage
    whose every pair is settled (else only those whose timing changed)."""

    snapshot: Snapshot
    settings: TimingSettings
    race: Race
    span: tuple[int, int]
    report: ReplayReport
    every_pair_of: int | None = None
    moved: set[int] = field(default_factory=set)  # stages whose standing moved

    async def run(self, conn: DbConnection, by_device: Mapping[str, list[EntryRef]]) -> None:
        report = self.report
        report.devices = len(by_device)
        report.entries = sum(len(v) for v in by_device.values())
        if report.dry_run:
            # One consistent snapshot for the whole plan, and the database's word that
            # nothing is written.
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                for device_id in sorted(by_device):
                    await self.device(conn, device_id, by_device[device_id])
            return
        for device_id in sorted(by_device):
            async with conn.transaction():
                await lock_device(conn, device_id)  # the live stage's lock for this device
                await self.device(conn, device_id, by_device[device_id])
        await rank_each(conn, self.snapshot, self.race, self.moved)

    async def device(self, conn: DbConnection, device_id: str, entries: list[EntryRef]) -> None:
        """One device's outputs, as the full path computes them for a window."""
        snapshot, settings, dry = self.snapshot, self.settings, self.report.dry_run
        timing: dict[int, list[Diff[TimingRow]]] = defaultdict(list)
        for window in chunks(self.span):
            fixes = await read_range(conn, device_id, *context_span(*window, settings))
            self.report.fixes += sum(1 for p in fixes if window[0] <= p.ts_ms < window[1])
            for entry in entries:
                plan = await plan_timing(conn, snapshot, entry, fixes, window, settings)
                self._report_timing(entry, plan, window)
                if not dry:
                    await store.apply(conn, TIMING_RECORDS, plan.diff)
                timing[entry.id].append(plan.diff)
        # Alerts from the range's start on, read as the full path reads for a window.
        since = self.span[0]
        covered = since - alert_lookback_ms(snapshot, entries) - LOOKBACK_MARGIN_MS
        records = await read_range(conn, device_id, covered, FOREVER_MS)
        now = self.race.clock()
        pairs: list[tuple[int, EntryRef, None]] = []
        for entry in entries:
            facts = await store.of_entry(
                conn, TIMING_FACTS, entry.id, 0, FOREVER_MS, SPAN_AND_ZONE_KINDS
            )
            if dry:  # as the timing writes would have left them
                facts = _as_planned(facts, timing[entry.id])
            plan_a = await plan_alerts(conn, snapshot, entry, since, records, covered, facts, now)
            self._report_alerts(plan_a)
            if not dry:
                await store.apply(conn, ALERTS, plan_a.diff)
            stages = {o.data.stage for d in timing[entry.id] for o, _ in d.changes()}
            if self.every_pair_of is not None:
                stages.add(self.every_pair_of)
            pairs += [(s, entry, None) for s in sorted(stages)]
        if not dry:  # once per transaction: it takes the stages' locks (locks.py)
            self.moved |= await self.race.settle_many(conn, snapshot, pairs, rank=False)

    def _report_timing(
        self, entry: EntryRef, plan: Plan[TimingRow], window: tuple[int, int]
    ) -> None:
        """The changes the timing plan makes, in report form: a row an official took over
        (same key, source manual) is never written, so it is no change."""
        report, manual = self.report, self.snapshot.manual.timing_records
        taken = {r["key"] for r in manual}
        created, updated, deleted = (
            [o for o in part if o.key not in taken]
            for part in (plan.diff.created, plan.diff.updated, plan.diff.deleted)
        )
        report.records += len(plan.new)
        report.manual += sum(
            1 for r in manual if r["entry"] == entry.id and window[0] <= r["at_ms"] < window[1]
        )
        report.unchanged += len(plan.new) - len(created) - len(updated)
        for o in updated:
            old = plan.old[o.key].data.crossed_at
            change: ChangeKind = "re-timed" if old != o.data.crossed_at else "updated"
            report.changes.append(_change(change, o, old, o.data.crossed_at))
        added = [_change("added", o, None, o.data.crossed_at) for o in created]
        removed = [_change("removed", o, o.data.crossed_at, None) for o in deleted]
        report.changes.extend(pair_moves(removed, added))

    def _report_alerts(self, plan: Plan[AlertRow]) -> None:
        d = plan.diff
        self.report.alerts += [_alert_change("removed", o) for o in d.deleted]
        self.report.alerts += [_alert_change("updated", o) for o in d.updated]
        self.report.alerts += [_alert_change("added", o) for o in d.created]


def _as_planned(
    stored: dict[str, Output[TimingFacts]], diffs: Iterable[Diff[TimingRow]]
) -> dict[str, Output[TimingFacts]]:
    """The entry's start, finish and zone exit records once these diffs are applied."""
    facts = dict(stored)
    for d in diffs:
        for o in d.deleted:
            facts.pop(o.key, None)
        for o in d.created + d.updated:
            if o.data.kind in SPAN_AND_ZONE_KINDS:
                facts[o.key] = Output(
                    o.collection, o.key, o.event, o.stage, o.entry, o.at_ms, o.data.facts
                )
    return facts


def _change(
    kind: ChangeKind, o: Output[TimingRow], old_ms: int | None, new_ms: int | None
) -> Change:
    return Change(
        kind, o.data.stage, o.data.entry, o.data.geofence, o.data.kind, old_ms, new_ms, o.key
    )


def _alert_change(kind: AlertChangeKind, o: Output[AlertRow]) -> AlertChange:
    a = o.data
    return AlertChange(kind, a.entry, a.stage, a.kind, a.severity, a.started_at, a.ended_at, o.key)


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

"""Penalties, stage results, rankings and alerts, kept in step with the timing records.

The timing records of an entry change (a crossing cut, re-timed, superseded by an
official's row) → that (stage, entry) pair is settled again: its speed-zone and
waypoint penalties, then its result; if the result's standing changed, the stage is
ranked again. Alerts follow the records themselves, per window. Time also changes
results (a car without a finish at stage close is `dnf`) and alerts (a silent device):
`tick` handles what the clock decides. Every step is a pure function of stored
positions, configuration, officials' rows and the clock, written as a diff (store.py).

Locks: pair settling runs under the device's advisory lock (the runner's, or taken by
`tick`); ranking a stage takes the stage's lock, always after a device's, so two
devices finishing at once rank the stage one after the other, each seeing the other's
committed result.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import msgspec
import structlog

from processor.core.position import Position
from processor.domain import alerts as alert_rules
from processor.domain.alerts import ActiveSpan, AlertSpan, RouteIndex, detect_alerts
from processor.domain.config import Event, Geofence, Stage
from processor.domain.penalties import measure_speed_zone, missed_waypoints, speed_penalty
from processor.domain.projection import LocalProjection
from processor.domain.results import (
    PenaltyIn,
    RankInput,
    StageResult,
    TimingRecordIn,
    counting_records,
    rank_stage,
    stage_result,
)
from processor.domain.rules import DEFAULT_RULES, AlertRules, EventRules
from processor.domain_runner import store
from processor.domain_runner.config_source import EntryRef, Snapshot
from processor.domain_runner.fixes import read_range
from processor.domain_runner.locks import lock_device, lock_stages, try_lock_device
from processor.domain_runner.notices import Window
from processor.domain_runner.store import Diff, Output
from processor.domain_runner.tables import ALERTS, PENALTIES, STAGE_RESULTS, TIMING_RECORDS
from processor.storage.pool import DbConnection

log = structlog.get_logger(__name__)

Clock = Callable[[], int]
# Whether a speed-zone passage (zone, exit ms) must be measured again (`Race.settle`).
Remeasure = Callable[[int, int], bool]
FOREVER_MS = 253_402_300_799_000  # 9999-12-31: the end of timestamptz time, as ms

_RANKED = ("status", "total_ms")
# Pairs settled between two yields to the event loop.
_YIELD_EVERY = 50
# What active spans (start, finish) and zone passages need of an entry's timing records.
_SPAN_AND_ZONE_KINDS = ("start_line", "finish_line", "zone_exit")


def alert_lookback_ms(snapshot: Snapshot, entries: Iterable[EntryRef]) -> int:
    """How far before a change a window reads so alerts rarely need a second read."""
    return max(
        (alert_rules.lookback_ms(rules_of(snapshot, e.event).alerts) for e in entries), default=0
    )


def wall_clock() -> int:
    return time.time_ns() // 1_000_000


def rules_of(snapshot: Snapshot, event_id: int) -> EventRules:
    event: Event | None = snapshot.config.event(event_id)
    return DEFAULT_RULES if event is None else event.rules


def stages_of_event(snapshot: Snapshot, event_id: int) -> list[Stage]:
    return sorted(
        (s for s in snapshot.config.stages if s.event == event_id), key=lambda s: (s.sequence, s.id)
    )


# --- timing records as the results see them --------------------------------------------


_In = TypeVar("_In")


def _with_officials(
    snapshot: Snapshot,
    collection: str,
    stage: int,
    entry: int,
    auto: Iterable[Output],
    from_auto: Callable[[Output], _In],
    from_manual: Callable[[dict[str, Any]], _In],
) -> list[_In]:
    """The pair's automatic rows, minus any an official took over (same key, now
    `source = manual`), plus the officials' rows: what results are computed from."""
    manual = snapshot.manual.of_pair(collection, stage, entry)
    taken = {r["key"] for r in manual if r["key"]}
    kept = [from_auto(o) for o in auto if o.key not in taken and o.stage == stage]
    return kept + [from_manual(r) for r in manual]


def record_inputs(
    snapshot: Snapshot, auto: Iterable[Output], stage: int, entry: int
) -> list[TimingRecordIn]:
    return _with_officials(
        snapshot,
        "timing_records",
        stage,
        entry,
        auto,
        lambda o: TimingRecordIn(
            o.data["geofence"],
            o.data["kind"],
            o.data["crossed_at"],
            "auto",
            o.data["status"],
            o.key,
        ),
        lambda r: TimingRecordIn(
            r["geofence"], r["kind"], r["at_ms"], "manual", r["status"], r["key"] or ""
        ),
    )


def penalty_inputs(
    snapshot: Snapshot, auto: Iterable[Output], stage: int, entry: int
) -> list[PenaltyIn]:
    return _with_officials(
        snapshot,
        "penalties",
        stage,
        entry,
        auto,
        lambda o: PenaltyIn(o.key, o.data["kind"], o.data["amount_ms"], "auto", o.data["status"]),
        lambda r: PenaltyIn(r["key"] or "", r["kind"], r["amount_ms"], "manual", r["status"]),
    )


def active_spans(
    snapshot: Snapshot, entry: EntryRef, timing: Iterable[Output], now_ms: int
) -> list[ActiveSpan]:
    """When the entry is on a running stage: from its start to its finish (or to the
    moment it is out of time, or still open)."""
    timing = list(timing)
    spans = []
    for stage in stages_of_event(snapshot, entry.event):
        records = record_inputs(snapshot, timing, stage.id, entry.id)
        result = stage_result(stage, snapshot.config.geofences, entry.id, records, [], now_ms)
        if result is None or result.start_at_ms is None:
            continue
        end = result.finish_at_ms
        if end is None:
            limits = [stage.closes_at_ms]
            if stage.max_time_s is not None:
                limits.append(result.start_at_ms + stage.max_time_s * 1000)
            end = min((t for t in limits if t is not None), default=None)
        spans.append(ActiveSpan(stage.id, result.start_at_ms, end))
    return spans


# --- a (stage, entry) pair ----------------------------------------------------------------


class Race:
    """The race outputs of the domain stage. `clock`: epoch ms (tests set it)."""

    def __init__(self, clock: Clock = wall_clock) -> None:
        self.clock = clock
        self._routes: tuple[str, RouteIndex | None] | None = None

    async def after_window(
        self,
        conn: DbConnection,
        snapshot: Snapshot,
        entry: EntryRef,
        first_changed_ms: int,
        fixes: list[Position],
        covered_from_ms: int,
        timing: Diff,
        *,
        alerts: bool = True,
    ) -> None:
        """Alerts from the changed records; then every pair whose timing changed, or with
        a speed-zone passage the changed records fall into (a late fix inside the zone
        changes its measurement, not its crossings)."""
        records = await store.of_entry(
            conn, "timing_records", entry.id, 0, FOREVER_MS, _SPAN_AND_ZONE_KINDS
        )
        if alerts:  # else the fast path found the records ordinary and no alert open
            await self.write_alerts(
                conn, snapshot, entry, first_changed_ms, fixes, covered_from_ms, records
            )
        changed: dict[int, set[int]] = {}
        for o, _ in timing.changes():
            if o.stage is not None:
                changed.setdefault(o.stage, set()).add(o.data["geofence"])
        for o in records.values():
            if (
                o.stage is not None
                and o.data["kind"] == "zone_exit"
                and o.at_ms >= first_changed_ms
            ):
                changed.setdefault(o.stage, set())

        def remeasure(fences: set[int]) -> Remeasure:
            return lambda fence, left_ms: fence in fences or left_ms >= first_changed_ms

        await self.settle_many(
            conn, snapshot, [(s, entry, remeasure(fences)) for s, fences in changed.items()]
        )

    def ordinary(
        self,
        snapshot: Snapshot,
        entries: list[EntryRef],
        window: Window,
        records: list[Position],
        active: dict[int, list[ActiveSpan]] | None = None,
    ) -> bool:
        """The in-order fast path of alerts, on the records alone: `records` (the window
        and a few seconds before it) hold the device's newest records and every new one
        is ordinary for every detector (moving, on a route, no panic, no gap, no jump,
        not a late upload). With no stored alert that can still change (`changing`),
        no alert can open or change.

        `active` (entry → its active spans, `active_spans`), when known: a slow fix off
        every active span is ordinary too — a car queueing at its start or parked after
        its finish cannot be a stopped car (`alerts.detect_stopped`)."""
        new = [p for p in records if window.start_ms <= p.ts_ms <= window.end_ms]
        before = [p for p in records if p.ts_ms < window.start_ms]
        if not new or not before:  # in order: checked with the timing (`in_order`)
            return False
        projection = snapshot.index.projection if snapshot.index is not None else None
        routes = self.routes(snapshot)
        for entry in entries:
            rules = rules_of(snapshot, entry.event).alerts
            spans = None if active is None else active.get(entry.id, [])
            if not _ordinary(before[-1], new, rules, routes, snapshot, entry, projection, spans):
                return False
        return True

    async def active_spans_of(
        self, conn: DbConnection, snapshot: Snapshot, entries: Iterable[EntryRef]
    ) -> dict[int, list[ActiveSpan]]:
        """`active_spans` of many entries, from one read of their start, finish and zone
        exit records."""
        by_id = {e.id: e for e in entries}
        if not by_id:
            return {}
        records = await store.of_entries(
            conn,
            "timing_records",
            dict.fromkeys(by_id, (0, FOREVER_MS)),
            _SPAN_AND_ZONE_KINDS,
        )
        now = self.clock()
        return {
            e: active_spans(snapshot, entry, records[e].values(), now) for e, entry in by_id.items()
        }

    async def changing(self, conn: DbConnection, since: dict[int, int]) -> set[int]:
        """Entries (of `since`: entry → first changed ms) with a stored alert that
        records from then on can still change: one query for a whole notice."""
        if not since:
            return set()
        entries = sorted(since)
        rows = await conn.fetch(
            "SELECT DISTINCT o.entry FROM unnest($1::int[], $2::bigint[]) AS w(e, t)"
            " JOIN telemetry.domain_outputs o ON o.collection = 'alerts' AND o.entry = w.e"
            " WHERE o.data->>'settled_after_ms' IS NULL"
            " OR (o.data->>'settled_after_ms')::bigint >= w.t",
            entries,
            [since[e] for e in entries],
        )
        return {r["entry"] for r in rows}

    async def settle(
        self,
        conn: DbConnection,
        snapshot: Snapshot,
        stage_id: int,
        entry: EntryRef,
        remeasure: Remeasure | None = None,
        *,
        rank: bool = True,
    ) -> bool:
        """Penalties and result of one pair; the stage's ranking if its standing moved
        (and `rank`); returns whether it moved.

        `remeasure(zone, exit_ms)`: whether a speed-zone passage must be measured again
        (reading its fixes); the others keep their stored penalty. None: all of them."""
        moved = await self.settle_many(conn, snapshot, [(stage_id, entry, remeasure)], rank=rank)
        return bool(moved)

    async def settle_many(
        self,
        conn: DbConnection,
        snapshot: Snapshot,
        pairs: Iterable[tuple[int, EntryRef, Remeasure | None]],
        *,
        rank: bool = True,
    ) -> set[int]:
        """`settle` for many pairs at once (a lagging batch changes the timing of
        thousands): each of their reads and writes is one statement for all of them, and
        each stage whose standing moved is ranked once. Returns those stages."""
        wanted: dict[store.Pair, tuple[Stage, EntryRef, list[Remeasure | None]]] = {}
        for stage_id, entry, remeasure in pairs:
            stage = snapshot.config.stage(stage_id)
            if stage is not None:
                wanted.setdefault((stage_id, entry.id), (stage, entry, []))[2].append(remeasure)
        if not wanted:
            return set()
        now = self.clock()
        keys = sorted(wanted)
        timing = await self.supersede(conn, snapshot, keys)
        old_penalties = await store.of_pairs(conn, "penalties", keys)
        penalty_diffs: list[Diff] = []
        settled: list[tuple[store.Pair, StageResult | None, list[Output]]] = []
        for n, key in enumerate(keys):
            if n % _YIELD_EVERY == _YIELD_EVERY - 1:
                await asyncio.sleep(0)  # thousands of pairs: let the event loop breathe
            stage, entry, remeasures = wanted[key]
            rules = rules_of(snapshot, entry.event)
            records = record_inputs(snapshot, timing[key].values(), stage.id, entry.id)
            provisional = stage_result(stage, snapshot.config.geofences, entry.id, records, [], now)
            penalties = await self._penalties(
                conn,
                snapshot,
                stage,
                entry,
                records,
                provisional,
                rules,
                old_penalties[key],
                _any_of(remeasures),
            )
            penalty_diffs.append(store.diff(old_penalties[key], penalties))
            result = stage_result(
                stage,
                snapshot.config.geofences,
                entry.id,
                records,
                penalty_inputs(snapshot, penalties, stage.id, entry.id),
                now,
            )
            settled.append((key, result, penalties))
        await store.apply(conn, PENALTIES, store.merge(penalty_diffs))
        # Results are the stages' rows (ranking rewrites them all): read and written only
        # under every touched stage's lock, taken once, after the device locks (locks.py).
        await lock_stages(conn, (stage_id for stage_id, _ in keys))
        old_results = await store.of_pairs(conn, "stage_results", keys)
        result_diffs: list[Diff] = []
        moved: set[int] = set()
        for (stage_id, entry_id), result, _ in settled:
            old = old_results[(stage_id, entry_id)]
            new = []
            if result is not None and not snapshot.manual.of_pair(
                "stage_results", stage_id, entry_id
            ):
                entry = wanted[(stage_id, entry_id)][1]
                new.append(result_output(entry, result, old.get(result_key(stage_id, entry_id))))
            d = store.diff(old, new)
            result_diffs.append(d)
            if _standing_moved(d, old):
                moved.add(stage_id)
        await store.apply(conn, STAGE_RESULTS, store.merge(result_diffs))
        if rank:
            stages = {stage.id: stage for stage, _, _ in wanted.values()}
            for stage_id in sorted(moved):
                await self.rank(conn, snapshot, stages[stage_id])
        return moved

    async def supersede(
        self, conn: DbConnection, snapshot: Snapshot, pairs: list[store.Pair]
    ) -> dict[store.Pair, dict[str, Output]]:
        """The pairs' automatic timing records, `superseded` where an official's row now
        decides the gate and `valid` again where none does any more (ADR 0004)."""
        timing = await store.of_pairs(
            conn, "timing_records", pairs, ("geofence", "kind", "crossed_at", "status")
        )
        gates = snapshot.manual.gates

        def status(o: Output) -> str:
            decided = (o.stage, o.entry, o.data["geofence"]) in gates
            return "superseded" if decided else "valid"

        stale = {
            pair: {k for k, o in outputs.items() if o.data["status"] != status(o)}
            for pair, outputs in timing.items()
        }
        stale = {pair: keys for pair, keys in stale.items() if keys}
        if not stale:
            return timing
        # Rare (an official's row came or went): rewrite those in full.
        full = await store.of_pairs(conn, "timing_records", sorted(stale))
        changed = [
            msgspec.structs.replace(o, data={**o.data, "status": status(o)})
            for pair, keys in stale.items()
            for k, o in full[pair].items()
            if k in keys
        ]
        await store.apply(conn, TIMING_RECORDS, Diff(updated=changed))
        for o in changed:
            pair = (o.stage or 0, o.entry or 0)
            light = timing[pair][o.key]
            timing[pair][o.key] = msgspec.structs.replace(
                light, data={**light.data, "status": o.data["status"]}
            )
        return timing

    async def _penalties(
        self,
        conn: DbConnection,
        snapshot: Snapshot,
        stage: Stage,
        entry: EntryRef,
        records: list[TimingRecordIn],
        provisional: StageResult | None,
        rules: EventRules,
        old: dict[str, Output],
        remeasure: Remeasure | None,
    ) -> list[Output]:
        counted = counting_records(records)  # in (crossed_at_ms, key) order
        fences = {g.id: g for g in snapshot.config.geofences_of(stage.id)}
        outputs: list[Output] = []
        for fence, entered, left in _zone_visits(counted, fences):
            assert fence.speed_limit_kmh is not None  # validated for speed zones
            key = f"auto:{stage.id}:{entry.id}:speeding:{fence.id}:{entered}"
            if remeasure is not None and not remeasure(fence.id, left):
                if key in old:
                    outputs.append(old[key])
                continue
            fixes = await read_range(conn, entry.imei, entered, left)
            try:
                zone = measure_speed_zone(
                    fixes,
                    entered,
                    left,
                    fence.speed_limit_kmh,
                    fence.speed_limit_kmh + rules.speed.tolerance_kmh,
                    projection=snapshot.index.projection if snapshot.index else None,
                )
            except ValueError as exc:  # fixes missing around the zone: nothing to measure
                log.warning("speed_zone_unmeasured", entry=entry.id, zone=fence.id, error=str(exc))
                continue
            penalty = speed_penalty(zone, rules.speed)
            if penalty is not None:
                evidence = {"zone": fence.id, "zone_name": fence.name, **penalty.evidence}
                outputs.append(
                    _penalty(
                        entry,
                        stage.id,
                        key,
                        "speeding",
                        penalty.amount_ms,
                        penalty.reason,
                        evidence,
                        entered,
                    )
                )
        done = provisional is not None and provisional.status in ("finished", "dnf")
        if provisional is not None and done and provisional.start_at_ms is not None:
            end = provisional.finish_at_ms or FOREVER_MS
            start = provisional.start_at_ms
            visited = {
                r.geofence_id
                for r in counted
                if r.kind == "waypoint" and start <= r.crossed_at_ms <= end
            }
            waypoints = [g for g in fences.values() if g.kind == "waypoint"]
            types = {g.id: g.waypoint_type for g in waypoints}
            for missed in missed_waypoints(waypoints, visited, rules.waypoints, types):
                key = f"auto:{stage.id}:{entry.id}:missed_waypoint:{missed.geofence_id}"
                outputs.append(
                    _penalty(
                        entry,
                        stage.id,
                        key,
                        "missed_waypoint",
                        missed.amount_ms,
                        missed.reason,
                        dict(missed.evidence),
                        provisional.finish_at_ms or start,
                    )
                )
        return outputs

    async def rank(self, conn: DbConnection, snapshot: Snapshot, stage: Stage) -> None:
        """Ranks and gaps of every automatic result of the stage (only changed ones are
        written). Under the stage's lock (already held after `settle_many`)."""
        await lock_stages(conn, [stage.id])
        results = await store.standings(conn, stage.id)
        entries = {e.id: e for e in snapshot.entries_of_event(stage.event)}
        inputs = [
            RankInput(
                r.entry, _number(entries, r.entry), _class(entries, r.entry), r.status, r.total_ms
            )
            for r in results
        ]
        inputs += [
            RankInput(
                r["entry"],
                _number(entries, r["entry"]),
                _class(entries, r["entry"]),
                r["status"],
                r["total_ms"],
            )
            for r in snapshot.manual.stage_results
            if r["stage"] == stage.id
        ]
        rankings = rank_stage(_unique_entries(inputs))
        changed = []
        for r in results:
            ranking = rankings.get(r.entry)
            if ranking is None:
                continue
            placing = (
                ranking.rank,
                ranking.class_rank,
                ranking.gap_leader_ms,
                ranking.gap_ahead_ms,
            )
            if placing != r.placing:
                changed.append((r, placing))
        await store.set_placings(conn, STAGE_RESULTS, changed)

    # --- alerts -----------------------------------------------------------------------

    async def write_alerts(
        self,
        conn: DbConnection,
        snapshot: Snapshot,
        entry: EntryRef,
        first_changed_ms: int,
        fixes: list[Position],
        covered_from_ms: int,
        timing: dict[str, Output],
    ) -> None:
        """Alerts after records changed from `first_changed_ms` on. `fixes`: the
        device's records from `covered_from_ms` to the newest (read once per window
        for timing and alerts; read again only when an alert needs to look further back).
        """
        rules = rules_of(snapshot, entry.event).alerts
        now = self.clock()
        active = active_spans(snapshot, entry, timing.values(), now)
        stored = await store.of_entry(conn, "alerts", entry.id, 0, FOREVER_MS)
        spans = {k: alert_span(o) for k, o in stored.items()}
        before = [p for p in fixes if p.ts_ms < first_changed_ms]
        start = alert_rules.read_from_ms(
            first_changed_ms,
            max((p.ts_ms for p in before), default=None),
            max((p.ts_ms for p in before if p.fix_valid), default=None),
            rules,
        )
        changing = [s for s in spans.values() if s.may_change_from(first_changed_ms)]
        start = min([start, *(s.started_at_ms - alert_rules.lookback_ms(rules) for s in changing)])
        if start < covered_from_ms:
            records = await read_range(conn, entry.imei, start, FOREVER_MS)
        else:
            records = [p for p in fixes if p.ts_ms >= start]
        detected = detect_alerts(records, active, rules, self.routes(snapshot))
        silent = alert_rules.open_signal_lost(records[-1] if records else None, now, active, rules)
        if silent is not None and records and records[-1].ts_ms >= first_changed_ms:
            detected.append(silent)
        merged = alert_rules.merge_recomputed(spans.values(), detected, first_changed_ms)
        new = [alert_output(entry, s) for s in merged]
        await store.apply(conn, ALERTS, store.diff(stored, new))

    def routes(self, snapshot: Snapshot) -> RouteIndex | None:
        if self._routes is None or self._routes[0] != snapshot.fingerprint:
            routes = None
            if snapshot.index is not None:
                routes = RouteIndex(snapshot.config.stages, snapshot.index.projection)
            self._routes = (snapshot.fingerprint, routes)
        return self._routes[1]

    # --- the clock ----------------------------------------------------------------------

    async def tick(self, conn: DbConnection, snapshot: Snapshot) -> int:
        """What the clock decides: results that become dnf/dns, signals lost by now.
        Each pair in a transaction of its own, under its device's lock (never several
        device locks at once: a window holding one may be waiting for a stage lock).
        Returns the number of pairs settled."""
        now = self.clock()
        settled = 0
        for event in snapshot.config.events:
            entries = snapshot.entries_of_event(event.id)
            for stage in stages_of_event(snapshot, event.id):
                if stage.opens_at_ms is None or now < stage.opens_at_ms:
                    continue
                by_entry = {r.entry: r for r in await store.standings(conn, stage.id)}
                moved = False
                for entry in entries:
                    if _clock_decides(stage, by_entry.get(entry.id), now):
                        moved |= await self.settle_locked(
                            conn, snapshot, stage.id, entry, wait=False
                        )
                        settled += 1
                if moved:  # once for the whole stage, not once per car
                    async with conn.transaction():
                        await self.rank(conn, snapshot, stage)
            for entry in await self._silent(conn, snapshot, event.id, entries, now):
                async with conn.transaction():
                    # Busy: a window of it is being handled, so it is not silent.
                    if await try_lock_device(conn, entry.imei):
                        await self.signal_lost_now(conn, snapshot, entry, now)
        return settled

    async def _silent(
        self,
        conn: DbConnection,
        snapshot: Snapshot,
        event_id: int,
        entries: list[EntryRef],
        now: int,
    ) -> list[EntryRef]:
        """Entries running a stage whose device sent nothing for the shortest signal-lost
        threshold: the only ones worth a closer look (one query for the whole field)."""
        running: set[int] = set()
        for stage in stages_of_event(snapshot, event_id):
            if stage.opens_at_ms is not None and stage.opens_at_ms <= now:
                running |= {
                    r.entry for r in await store.standings(conn, stage.id) if r.status == "running"
                }
        candidates = [e for e in entries if e.id in running]
        if not candidates:
            return []
        rows = await conn.fetch(
            "SELECT d, (SELECT (extract(epoch FROM max(ts)) * 1000)::bigint"
            " FROM telemetry.positions WHERE device_id = d AND ts <= to_timestamp($2 / 1000.0))"
            " AS last_ms FROM unnest($1::text[]) AS d",
            [e.imei for e in candidates],
            now,
        )
        last = {r["d"]: r["last_ms"] for r in rows}
        silent = []
        for e in candidates:
            after_ms = rules_of(snapshot, e.event).alerts.signal_lost.after_s * 1000
            if last.get(e.imei) is None or now - last[e.imei] > after_ms:
                silent.append(e)
        return silent

    async def settle_locked(
        self,
        conn: DbConnection,
        snapshot: Snapshot,
        stage_id: int,
        entry: EntryRef,
        *,
        wait: bool = True,
    ) -> bool:
        """`settle` in a transaction of its own under the device's lock, leaving the
        ranking to the caller; whether the standing moved. `wait=False` (the clock):
        a device busy with a batch is skipped, and settled at a later tick."""
        async with conn.transaction():
            if wait:
                await lock_device(conn, entry.imei)
            elif not await try_lock_device(conn, entry.imei):
                return False
            return await self.settle(conn, snapshot, stage_id, entry, rank=False)

    async def signal_lost_now(
        self, conn: DbConnection, snapshot: Snapshot, entry: EntryRef, now: int
    ) -> None:
        """Open (or escalate) the signal-lost alert of a device silent on a running stage."""
        timing = await store.of_entry(
            conn, "timing_records", entry.id, 0, FOREVER_MS, _SPAN_AND_ZONE_KINDS
        )
        active = active_spans(snapshot, entry, timing.values(), now)
        if not any(s.contains(now) for s in active):
            return
        last = await last_record(conn, entry.imei, now)
        span = alert_rules.open_signal_lost(
            last, now, active, rules_of(snapshot, entry.event).alerts
        )
        if span is None:
            return
        new = alert_output(entry, span)
        stored = await store.of_entry(conn, "alerts", entry.id, new.at_ms, new.at_ms + 1)
        old = stored.get(new.key)
        if old is not None and old.data["ended_at"] is not None:
            return  # records already closed the gap
        await store.apply(conn, ALERTS, store.diff({} if old is None else {old.key: old}, [new]))


async def last_record(conn: DbConnection, device_id: str, before_ms: int) -> Position | None:
    found = await read_range(conn, device_id, before_ms, before_ms)
    earlier = [p for p in found if p.ts_ms < before_ms]
    return earlier[-1] if earlier else None


# --- outputs ------------------------------------------------------------------------------


def result_key(stage: int, entry: int) -> str:
    return f"auto:{stage}:{entry}"


def result_output(entry: EntryRef, r: StageResult, previous: Output | None) -> Output:
    ranks = dict.fromkeys(("rank", "class_rank", "gap_leader_ms", "gap_ahead_ms"))
    standing = {"status": r.status, "total_ms": r.total_ms}
    if previous is not None and all(previous.data.get(k) == standing[k] for k in _RANKED):
        ranks = {k: previous.data.get(k) for k in ranks}  # standing unchanged: ranks hold
    return Output(
        "stage_results",
        result_key(r.stage, r.entry),
        entry.event,
        r.stage,
        r.entry,
        r.start_at_ms or 0,
        {
            "stage": r.stage,
            "entry": r.entry,
            "start_at": r.start_at_ms,
            "finish_at": r.finish_at_ms,
            "elapsed_ms": r.elapsed_ms,
            "penalty_ms": r.penalty_ms,
            "total_ms": r.total_ms,
            "status": r.status,
            **ranks,
            "splits": [
                {"geofence": s.geofence, "name": s.name, "at": s.at_ms, "elapsed_ms": s.elapsed_ms}
                for s in r.splits
            ],
            "evidence": {
                "timing_records": list(r.evidence.timing_records),
                "penalties": list(r.evidence.penalties),
            },
        },
    )


def _standing_moved(d: Diff, old: dict[str, Output]) -> bool:
    """Whether the stage needs ranking again: only finished results are ranked, so a
    result that is or was finished and whose status or total changed (a car starting,
    or a new split time, moves no one)."""
    for o, change in d.changes():
        before = old[o.key].data if o.key in old else {}
        after = o.data if change != "deleted" else {}
        if "finished" not in (before.get("status"), after.get("status")):
            continue
        if any(before.get(k) != after.get(k) for k in _RANKED):
            return True
    return False


def _penalty(
    entry: EntryRef,
    stage: int,
    key: str,
    kind: str,
    amount_ms: int,
    reason: str,
    evidence: dict[str, Any],
    at_ms: int,
) -> Output:
    return Output(
        "penalties",
        key,
        entry.event,
        stage,
        entry.id,
        at_ms,
        {
            "stage": stage,
            "entry": entry.id,
            "kind": kind,
            "amount_ms": amount_ms,
            "reason": reason,
            "status": "valid",
            "details": evidence,
        },
    )


def alert_output(entry: EntryRef, s: AlertSpan) -> Output:
    return Output(
        "alerts",
        f"auto:{entry.id}:{s.kind}:{s.started_at_ms}",
        entry.event,
        s.stage_id,
        entry.id,
        s.started_at_ms,
        {
            "event": entry.event,
            "entry": entry.id,
            "stage": s.stage_id,
            "kind": s.kind,
            "severity": s.severity,
            "started_at": s.started_at_ms,
            "ended_at": s.ended_at_ms,
            "details": dict(s.details),
            "status": "open" if s.ended_at_ms is None else "ended",
            "settled_after_ms": s.settled_after_ms,
        },
    )


def alert_span(o: Output) -> AlertSpan:
    d = o.data
    return AlertSpan(
        d["kind"],
        d["stage"],
        d["started_at"],
        d["ended_at"],
        d["severity"],
        d["details"],
        d["settled_after_ms"],
    )


def _ordinary(
    previous: Position,
    new: list[Position],
    rules: AlertRules,
    routes: RouteIndex | None,
    snapshot: Snapshot,
    entry: EntryRef,
    projection: LocalProjection | None,
    active: list[ActiveSpan] | None = None,
) -> bool:
    """Whether these records, after `previous`, can start no alert of any kind.
    `active`: the entry's active spans if known (None: any fix may be on one)."""
    last, last_fix = previous, previous if previous.fix_valid else None
    route_stages = [
        s.id
        for s in stages_of_event(snapshot, entry.event)
        if routes is not None and s.id in routes
    ]
    points: list[tuple[float, float]] = []
    for p in new:
        if p.ts_ms - last.ts_ms > rules.signal_lost.after_s * 1000:
            return False
        if p.received_at_ms - p.ts_ms > rules.signal_lost.after_s * 1000:
            return False  # a buffered upload: the signal was lost meanwhile
        if alert_rules.panic_triggers(p, rules.panic):
            return False
        if p.fix_valid:
            slow = p.speed is None or p.speed < rules.stopped.speed_below_kmh
            if slow and (active is None or any(s.contains(p.ts_ms) for s in active)):
                return False
            if last_fix is not None and projection is not None:
                a = projection.to_xy(last_fix.longitude, last_fix.latitude)
                b = projection.to_xy(p.longitude, p.latitude)
                dt = max(p.ts_ms - last_fix.ts_ms, 1) / 1000.0
                if math.dist(a, b) / dt * 3.6 > rules.gps_jump.max_speed_kmh:
                    return False
            points.append((p.longitude, p.latitude))
            last_fix = p
        last = p
    if routes is None or not route_stages or not points:
        return True
    # Near some route of the event, every fix (one vectorised query per route).
    radius = rules.off_route.distance_m
    near = [False] * len(points)
    for stage_id in route_stages:
        near = [a or b for a, b in zip(near, routes.near(stage_id, points, radius), strict=True)]
    return all(near)


def _any_of(remeasures: list[Remeasure | None]) -> Remeasure | None:
    """One pair asked to be settled several times: remeasure what any of them asked."""
    if any(r is None for r in remeasures):
        return None
    chosen = [r for r in remeasures if r is not None]
    if len(chosen) == 1:
        return chosen[0]
    return lambda fence, exit_ms: any(r(fence, exit_ms) for r in chosen)


def _zone_visits(
    counted: list[TimingRecordIn], fences: dict[int, Geofence]
) -> list[tuple[Geofence, int, int]]:
    """(zone, entry ms, exit ms) of every passage through a speed zone."""
    visits = []
    entered: dict[int, int] = {}
    for r in counted:
        fence = fences.get(r.geofence_id)
        if fence is None or fence.kind != "speed_zone":
            continue
        if r.kind == "zone_entry":
            entered[fence.id] = r.crossed_at_ms
        elif r.kind == "zone_exit" and fence.id in entered:
            visits.append((fence, entered.pop(fence.id), r.crossed_at_ms))
    return visits


def _clock_decides(stage: Stage, result: store.Standing | None, now: int) -> bool:
    """Whether the clock alone changes this pair's result now."""
    closed = stage.closes_at_ms is not None and now >= stage.closes_at_ms
    if result is None:
        return closed  # dns
    if result.status != "running":
        return False
    if closed:
        return True
    start = result.start_at
    return (
        stage.max_time_s is not None
        and start is not None
        and now >= start + stage.max_time_s * 1000
    )


def _number(entries: dict[int, EntryRef], entry: int | None) -> int:
    ref = entries.get(entry or 0)
    return ref.number if ref is not None else entry or 0


def _class(entries: dict[int, EntryRef], entry: int | None) -> str | None:
    ref = entries.get(entry or 0)
    return ref.klass if ref is not None else None


def _unique_entries(inputs: list[RankInput]) -> list[RankInput]:
    """An official's result replaces the automatic one of the same entry."""
    by_entry = {i.entry: i for i in inputs}
    return list(by_entry.values())

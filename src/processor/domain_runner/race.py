"""Results and ranking: penalties, stage results and rankings, kept in step with timing.

The timing records of an entry change (a crossing cut, re-timed, superseded by an
official's row) → that (stage, entry) pair is settled again: its speed-zone and
waypoint penalties, then its result; if the result's standing changed, the stage is
ranked again. `Race.settle_many` does it for any number of pairs with one read and
one write per collection; `Race.rank` ranks one stage. Every step is a pure function
(`domain.results`, `domain.penalties`, `domain.standing`) of stored positions,
configuration, officials' rows and the clock, written as a diff (store.py).

Invariant (locks.py): results are the stages' rows — ranking rewrites all of a
stage's — so they are read and written only under every touched stage's lock, taken
once per transaction by `settle_many`, after the device locks the caller holds
(penalties and timing records are the devices' rows). `rank` re-takes a lock already
held, or alone in a transaction of its own (the clock) takes just that one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
import structlog

from processor.domain.config import Stage
from processor.domain.penalties import measure_speed_zone, missed_waypoints, speed_penalty
from processor.domain.results import (
    PenaltyIn,
    RankInput,
    StageResult,
    TimingRecordIn,
    counting_records,
    rank_stage,
    stage_result,
)
from processor.domain.rows import PenaltyRow, Placing, ResultRow, TimingFacts
from processor.domain.rules import EventRules
from processor.domain.standing import (
    Remeasure,
    any_of,
    one_per_entry,
    penalty_inputs,
    standing_moved,
    timing_inputs,
    zone_visits,
)
from processor.domain_runner import store
from processor.domain_runner.config_source import EntryRef, Snapshot
from processor.domain_runner.fixes import read_range
from processor.domain_runner.locks import lock_stages
from processor.domain_runner.store import Diff, Output
from processor.domain_runner.tables import PENALTIES, STAGE_RESULTS, TIMING_FACTS, TIMING_RECORDS
from processor.storage.pool import DbConnection

log = structlog.get_logger(__name__)

Clock = Callable[[], int]
FOREVER_MS = 253_402_300_799_000  # 9999-12-31: the end of timestamptz time, as ms

# Pairs settled between two yields to the event loop.
_YIELD_EVERY = 50


def wall_clock() -> int:
    return time.time_ns() // 1_000_000


# --- rows as the results see them --------------------------------------------------------


def record_inputs(
    snapshot: Snapshot, auto: Iterable[Output[TimingFacts]], stage: int, entry: int
) -> list[TimingRecordIn]:
    """The pair's timing records for its result: its automatic ones (of `auto`) and
    its officials' rows (`standing.timing_inputs`)."""
    mine = [_auto_record(o) for o in auto if o.stage == stage]
    return timing_inputs(mine, snapshot.manual.of_pair("timing_records", stage, entry))


def _auto_record(o: Output[TimingFacts]) -> TimingRecordIn:
    r = o.data
    return TimingRecordIn(r.geofence, r.kind, r.crossed_at, "auto", r.status, o.key)


def _penalty_inputs(
    snapshot: Snapshot, auto: Iterable[Output[PenaltyRow]], stage: int, entry: int
) -> list[PenaltyIn]:
    mine = [
        PenaltyIn(o.key, o.data.kind, o.data.amount_ms, "auto", o.data.status)
        for o in auto
        if o.stage == stage
    ]
    return penalty_inputs(mine, snapshot.manual.of_pair("penalties", stage, entry))


# --- settling pairs, ranking stages ------------------------------------------------------


class Race:
    """Results and ranking of the domain stage. `clock`: epoch ms (tests set it); the
    other modules of the stage take their `now` from it too."""

    def __init__(self, clock: Clock = wall_clock) -> None:
        self.clock = clock

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
        each stage whose standing moved is ranked once (with `rank`). Returns those
        stages. At most once per transaction: it takes the stages' locks."""
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
        old_penalties = await store.of_pairs(conn, PENALTIES, keys)
        penalty_diffs: list[Diff[PenaltyRow]] = []
        settled: list[tuple[store.Pair, StageResult | None]] = []
        for n, key in enumerate(keys):
            if n % _YIELD_EVERY == _YIELD_EVERY - 1:
                await asyncio.sleep(0)  # thousands of pairs: let the event loop breathe
            stage, entry, remeasures = wanted[key]
            rules = snapshot.rules_of(entry.event)
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
                any_of(remeasures),
            )
            penalty_diffs.append(store.diff(old_penalties[key], penalties))
            result = stage_result(
                stage,
                snapshot.config.geofences,
                entry.id,
                records,
                _penalty_inputs(snapshot, penalties, stage.id, entry.id),
                now,
            )
            settled.append((key, result))
        await store.apply(conn, PENALTIES, store.merge(penalty_diffs))
        # Results are the stages' rows (ranking rewrites them all): read and written only
        # under every touched stage's lock, taken once, after the device locks (locks.py).
        await lock_stages(conn, (stage_id for stage_id, _ in keys))
        old_results = await store.of_pairs(conn, STAGE_RESULTS, keys)
        result_diffs: list[Diff[ResultRow]] = []
        moved: set[int] = set()
        for (stage_id, entry_id), result in settled:
            old = old_results[(stage_id, entry_id)]
            new = []
            if result is not None and not snapshot.manual.of_pair(
                "stage_results", stage_id, entry_id
            ):
                entry = wanted[(stage_id, entry_id)][1]
                new.append(result_output(entry, result, old.get(result_key(stage_id, entry_id))))
            d = store.diff(old, new)
            result_diffs.append(d)
            if _moved(d, old):
                moved.add(stage_id)
        await store.apply(conn, STAGE_RESULTS, store.merge(result_diffs))
        if rank:
            stages = {stage.id: stage for stage, _, _ in wanted.values()}
            for stage_id in sorted(moved):
                await self.rank(conn, snapshot, stages[stage_id])
        return moved

    async def supersede(
        self, conn: DbConnection, snapshot: Snapshot, pairs: list[store.Pair]
    ) -> dict[store.Pair, dict[str, Output[TimingFacts]]]:
        """The pairs' automatic timing records, `superseded` where an official's row now
        decides the gate and `valid` again where none does any more (ADR 0004)."""
        timing = await store.of_pairs(conn, TIMING_FACTS, pairs)
        gates = snapshot.manual.gates

        def status(o: Output[Any]) -> str:
            decided = (o.stage, o.entry, o.data.geofence) in gates
            return "superseded" if decided else "valid"

        stale = {
            pair: {k for k, o in outputs.items() if o.data.status != status(o)}
            for pair, outputs in timing.items()
        }
        stale = {pair: keys for pair, keys in stale.items() if keys}
        if not stale:
            return timing
        # Rare (an official's row came or went): rewrite those in full, in place.
        full = await store.of_pairs(conn, TIMING_RECORDS, sorted(stale))
        changed = [
            msgspec.structs.replace(o, data=msgspec.structs.replace(o.data, status=status(o)))
            for pair, keys in stale.items()
            for k, o in full[pair].items()
            if k in keys
        ]
        await store.apply(conn, TIMING_RECORDS, Diff(updated=changed))
        for o in changed:
            pair = (o.stage or 0, o.entry or 0)
            light = timing[pair][o.key]
            timing[pair][o.key] = msgspec.structs.replace(
                light, data=msgspec.structs.replace(light.data, status=o.data.status)
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
        old: dict[str, Output[PenaltyRow]],
        remeasure: Remeasure | None,
    ) -> list[Output[PenaltyRow]]:
        counted = counting_records(records)  # in (crossed_at_ms, key) order
        fences = {g.id: g for g in snapshot.config.geofences_of(stage.id)}
        outputs: list[Output[PenaltyRow]] = []
        for fence, entered, left in zone_visits(counted, fences):
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
                    penalty_output(
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
                    penalty_output(
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
        rankings = rank_stage(one_per_entry(inputs))
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


# --- outputs ------------------------------------------------------------------------------


def result_key(stage: int, entry: int) -> str:
    return f"auto:{stage}:{entry}"


def result_output(
    entry: EntryRef, r: StageResult, previous: Output[ResultRow] | None
) -> Output[ResultRow]:
    placing: Placing = (None, None, None, None)
    if previous is not None and previous.data.standing == (r.status, r.total_ms):
        placing = previous.data.placing  # standing unchanged: ranks hold
    return Output(
        "stage_results",
        result_key(r.stage, r.entry),
        entry.event,
        r.stage,
        r.entry,
        r.start_at_ms or 0,
        ResultRow.of(r, placing),
    )


def _moved(d: Diff[ResultRow], old: dict[str, Output[ResultRow]]) -> bool:
    """Whether a diff of a stage's results moves its standing (`standing_moved`)."""
    return any(
        standing_moved(
            old[o.key].data.standing if o.key in old else None,
            None if change == "deleted" else o.data.standing,
        )
        for o, change in d.changes()
    )


def penalty_output(
    entry: EntryRef,
    stage: int,
    key: str,
    kind: str,
    amount_ms: int,
    reason: str,
    evidence: dict[str, Any],
    at_ms: int,
) -> Output[PenaltyRow]:
    return Output(
        "penalties",
        key,
        entry.event,
        stage,
        entry.id,
        at_ms,
        PenaltyRow(stage, entry.id, kind, amount_ms, reason, "valid", evidence),
    )


def _number(entries: dict[int, EntryRef], entry: int | None) -> int:
    ref = entries.get(entry or 0)
    return ref.number if ref is not None else entry or 0


def _class(entries: dict[int, EntryRef], entry: int | None) -> str | None:
    ref = entries.get(entry or 0)
    return ref.klass if ref is not None else None

"""The clock: what time alone decides, every `PROCESSOR_DOMAIN_TICK_S`.

No notice says when a stage closes or a device falls silent, so a tick asks: results
that become dnf/dns (a stage closed, a car out of time: `standing.clock_decides`),
signal-lost alerts still going (`alerts.signal_lost_now`), and the pairs whose
officials' rows changed since the last look (ConfigSource keeps the previous ones).

Invariant: one instance ticks at a time (the clock's session lock, only ever tried),
and each pair is settled in a transaction of its own under its device's lock — never
several device locks at once, since a window holding one may be waiting for a stage
lock — with the ranking left to one transaction per stage that moved (locks.py).
A device busy with a window is skipped and settled at a later tick.
"""

from __future__ import annotations

import math

from processor.domain.standing import clock_decides
from processor.domain_runner import store
from processor.domain_runner.alerts import signal_lost_now
from processor.domain_runner.config_source import ConfigSource, EntryRef, Snapshot
from processor.domain_runner.locks import lock_device, try_lock_clock, try_lock_device, unlock_clock
from processor.domain_runner.race import Race
from processor.storage.engine import distributed
from processor.storage.pool import DbConnection


async def tick(conn: DbConnection, source: ConfigSource, race: Race) -> None:
    """One tick, by one instance at a time: the pairs whose officials' rows changed,
    then what the clock decides (`decide`)."""
    if not await try_lock_clock(conn):
        return
    try:
        snapshot = await source.current(conn)
        previous, source.previous_manual = source.previous_manual, None
        if previous is not None:
            pairs = sorted(previous.pairs() | snapshot.manual.pairs())
            moved: set[int] = set()
            for stage_id, entry_id in pairs:
                entry = snapshot.entry(entry_id)
                if entry is not None and await settle_locked(conn, snapshot, race, stage_id, entry):
                    moved.add(stage_id)
            await rank_each(conn, snapshot, race, moved)
        await decide(conn, snapshot, race)
    finally:
        await unlock_clock(conn)


async def decide(conn: DbConnection, snapshot: Snapshot, race: Race) -> int:
    """What the clock decides: results that become dnf/dns, signals lost by now.
    Returns the number of pairs settled."""
    now = race.clock()
    settled = 0
    for event in snapshot.config.events:
        entries = snapshot.entries_of_event(event.id)
        for stage in snapshot.stages_of_event(event.id):
            if stage.opens_at_ms is None or now < stage.opens_at_ms:
                continue
            by_entry = {r.entry: r for r in await store.standings(conn, stage.id)}
            moved = False
            for entry in entries:
                stored = by_entry.get(entry.id)
                status = None if stored is None else stored.status
                start = None if stored is None else stored.start_at
                if clock_decides(stage, status, start, now):
                    moved |= await settle_locked(conn, snapshot, race, stage.id, entry, wait=False)
                    settled += 1
            if moved:  # once for the whole stage, not once per car
                await rank_each(conn, snapshot, race, {stage.id})
        for entry in await _silent(conn, snapshot, event.id, entries, now):
            async with conn.transaction():
                # Busy: a window of it is being handled, so it is not silent.
                if await try_lock_device(conn, entry.imei):
                    await signal_lost_now(conn, snapshot, entry, now)
    return settled


async def _silent(
    conn: DbConnection,
    snapshot: Snapshot,
    event_id: int,
    entries: list[EntryRef],
    now: int,
) -> list[EntryRef]:
    """Entries running a stage whose device sent nothing for the shortest signal-lost
    threshold: the only ones worth a closer look (one query for the whole field)."""
    running: set[int] = set()
    for stage in snapshot.stages_of_event(event_id):
        if stage.opens_at_ms is not None and stage.opens_at_ms <= now:
            running |= {
                r.entry for r in await store.standings(conn, stage.id) if r.status == "running"
            }
    candidates = [e for e in entries if e.id in running]
    if not candidates:
        return []
    threshold = {
        e.id: snapshot.rules_of(e.event).alerts.signal_lost.after_s * 1000 for e in candidates
    }
    devices = sorted({e.imei for e in candidates})
    if await distributed(conn):
        # Citus pushes no per-device `max()` probe beside unnest() down; a device's
        # newest fix within the longest threshold is enough (older: silent anyway), and
        # that read is bounded by the threshold, not by the device's history.
        longest = math.ceil(max(threshold.values()))
        rows = await conn.fetch(_LAST_FIX_RECENT_SQL, devices, now, longest)
    else:
        rows = await conn.fetch(_LAST_FIX_SQL, devices, now)
    last = {r["d"]: r["last_ms"] for r in rows}
    silent = []
    for e in candidates:
        at = last.get(e.imei)
        if at is None or now - at > threshold[e.id]:
            silent.append(e)
    return silent


# Per device, its newest fix at or before $2: one backward probe of the primary key each.
_LAST_FIX_SQL = (
    "SELECT d, (SELECT (extract(epoch FROM max(ts)) * 1000)::bigint"
    " FROM telemetry.positions WHERE device_id = d AND ts <= to_timestamp($2 / 1000.0))"
    " AS last_ms FROM unnest($1::text[]) AS d"
)
# The same on a distributed table, for fixes within $3 ms before $2 (none: no row):
# routed to the devices' shards, a range scan of the last $3 ms of each.
_LAST_FIX_RECENT_SQL = (
    "SELECT device_id AS d, (extract(epoch FROM max(ts)) * 1000)::bigint AS last_ms"
    " FROM telemetry.positions WHERE device_id = ANY($1::text[])"
    " AND ts <= to_timestamp($2 / 1000.0) AND ts >= to_timestamp(($2 - $3) / 1000.0)"
    " GROUP BY device_id"
)


async def settle_locked(
    conn: DbConnection,
    snapshot: Snapshot,
    race: Race,
    stage_id: int,
    entry: EntryRef,
    *,
    wait: bool = True,
) -> bool:
    """`Race.settle` in a transaction of its own under the device's lock, leaving the
    ranking to the caller (`rank_each`); whether the standing moved. `wait=False`: a
    device busy with a batch is skipped, and settled at a later tick."""
    async with conn.transaction():
        if wait:
            await lock_device(conn, entry.imei)
        elif not await try_lock_device(conn, entry.imei):
            return False
        return await race.settle(conn, snapshot, stage_id, entry, rank=False)


async def rank_each(conn: DbConnection, snapshot: Snapshot, race: Race, stages: set[int]) -> None:
    """Rank these stages, each in a transaction of its own (its lock alone)."""
    for stage_id in sorted(stages):
        stage = snapshot.config.stage(stage_id)
        if stage is not None:
            async with conn.transaction():
                await race.rank(conn, snapshot, stage)

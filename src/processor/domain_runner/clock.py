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

from processor.domain.standing import clock_decides
from processor.domain_runner import store
from processor.domain_runner.alerts import signal_lost_now
from processor.domain_runner.config_source import ConfigSource, EntryRef, Snapshot
from processor.domain_runner.locks import lock_device, try_lock_clock, try_lock_device, unlock_clock
from processor.domain_runner.race import Race
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
        after_ms = snapshot.rules_of(e.event).alerts.signal_lost.after_s * 1000
        if last.get(e.imei) is None or now - last[e.imei] > after_ms:
            silent.append(e)
    return silent


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

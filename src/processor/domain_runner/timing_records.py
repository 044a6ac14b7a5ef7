"""Windows → timing records: the crossings of a device's fixes, as published rows.

For a span of time and the fixes that decide it, `timing_crossings` recomputes the
crossings (`domain.timing.recompute_window`) of the entry's stages, `timing_output`
makes each the row it publishes under a deterministic key, and `plan_timing` diffs
them against the entry's automatic records of the span in the stage's record of its
outputs (store.py): the caller writes the plan (`store.apply(conn, TIMING_RECORDS,
plan.diff)`, in its transaction) or, dry, reports it.

Invariant: the records of a span are a function of the stored fixes and the
configuration (DESIGN rule 7): recomputing a span that nothing changed writes nothing,
and windows tile (`processor.domain.timing`), so one pass over a long range equals
the live windows that covered it. Rows with `source = 'manual'` are never written or
deleted; an automatic record of a gate an official decided is kept as `superseded`.
The caller holds the device's lock (locks.py).
"""

from __future__ import annotations

from typing import Any

import msgspec

from processor.core.position import Position
from processor.domain.rows import TimingRow
from processor.domain.timing import Crossing, TimingSettings, recompute_window
from processor.domain_runner import store
from processor.domain_runner.config_source import EntryRef, Snapshot
from processor.domain_runner.store import Output, Plan
from processor.domain_runner.tables import TIMING_RECORDS
from processor.storage.pool import DbConnection


def record_key(entry: EntryRef, c: Crossing) -> str:
    """Stable while the two fixes bracketing the crossing are unchanged (see timing.py)."""
    return f"auto:{entry.id}:{c.geofence_id}:{c.before.ts_ms}:{c.after.ts_ms}:{c.ordinal}"


def record_kind(c: Crossing) -> str:
    if c.transition in ("entry", "exit"):
        return f"zone_{c.transition}"
    return str(c.kind)


def record_details(c: Crossing) -> dict[str, Any]:
    return {
        "transition": c.transition,
        "direction": c.direction,
        "method": c.method,
        "fraction": round(c.fraction, 6),
        "latitude": c.latitude,
        "longitude": c.longitude,
        "distance_m": c.distance_m,
        "before": msgspec.structs.asdict(c.before),
        "after": msgspec.structs.asdict(c.after),
    }


def timing_crossings(
    snapshot: Snapshot,
    entry: EntryRef,
    fixes: list[Position],
    span: tuple[int, int],
    settings: TimingSettings,
) -> list[Crossing]:
    """The automatic records of `entry` in `span` (pure).

    Separate so `processor replay`/`recompute` plan exactly what the live stage writes.
    Without any geofence there is nothing to store, and the stale ones are still removed.
    """
    if snapshot.index is None:
        return []
    stages = {s.id for s in snapshot.config.stages if s.event == entry.event}
    return [
        c
        for c in recompute_window(fixes, snapshot.index, window=span, settings=settings)
        if c.stage_id in stages
    ]


def timing_output(snapshot: Snapshot, entry: EntryRef, c: Crossing) -> Output[TimingRow]:
    """The published row of a crossing. An official's manual record for the same gate
    (ADR 0004) makes the automatic ones `superseded`: kept, for the audit trail."""
    assert c.stage_id is not None  # timing_crossings keeps crossings of the entry's stages
    manual = (c.stage_id, entry.id, c.geofence_id) in snapshot.manual.gates
    return Output(
        "timing_records",
        record_key(entry, c),
        entry.event,
        c.stage_id,
        entry.id,
        c.crossed_at_ms,
        TimingRow(
            stage=c.stage_id,
            entry=entry.id,
            geofence=c.geofence_id,
            kind=record_kind(c),
            ordinal=c.ordinal,
            crossed_at=c.crossed_at_ms,
            status="superseded" if manual else "valid",
            fix_before_at=c.before.ts_ms,
            fix_after_at=c.after.ts_ms,
            details=record_details(c),
        ),
    )


def timing_rows(
    snapshot: Snapshot,
    entry: EntryRef,
    fixes: list[Position],
    span: tuple[int, int],
    settings: TimingSettings,
) -> list[Output[TimingRow]]:
    """The rows of `timing_crossings`."""
    return [
        timing_output(snapshot, entry, c)
        for c in timing_crossings(snapshot, entry, fixes, span, settings)
    ]


async def plan_timing(
    conn: DbConnection,
    snapshot: Snapshot,
    entry: EntryRef,
    fixes: list[Position],
    span: tuple[int, int],
    settings: TimingSettings,
) -> Plan[TimingRow]:
    """Replacing the automatic timing records of `entry` in `span` by a fresh
    computation (reads only)."""
    old = await store.of_entry(conn, TIMING_RECORDS, entry.id, span[0], span[1])
    return store.plan(old, timing_rows(snapshot, entry, fixes, span, settings))

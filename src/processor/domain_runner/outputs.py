"""The domain stage's handler: timing records and decoded attributes for one window.

Everything written is a function of stored positions and the configuration (rule 7):
for the changed range it recomputes the crossings of every segment that can be affected,
upserts them under deterministic keys, removes automatic records the re-cut no longer
produces, and writes an outbox event for every actual change, all in the caller's
transaction. Rows with `source = 'manual'` are never written or deleted here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from processor.core.position import Position
from processor.domain.attributes import decode_attributes
from processor.domain.geofences import GeofenceIndex
from processor.domain.timing import (
    DEFAULT_SETTINGS,
    Crossing,
    TimingSettings,
    affected_span,
    any_hits,
    context_span,
    recompute_window,
)
from processor.domain_runner import store
from processor.domain_runner.config_source import ConfigSource, EntryRef, Snapshot
from processor.domain_runner.fixes import read_many, read_range
from processor.domain_runner.notices import Window
from processor.domain_runner.race import FOREVER_MS, Race, alert_lookback_ms
from processor.domain_runner.store import Diff, Output
from processor.domain_runner.tables import TIMING_RECORDS
from processor.storage.pool import DbConnection

_ATTRIBUTES = """
INSERT INTO telemetry.position_attributes (device_id, ts, attributes, mapping_version)
SELECT d, to_timestamp(t / 1000.0), a::jsonb, $4
FROM unnest($1::text[], $2::bigint[], $3::text[]) AS x(d, t, a)
ON CONFLICT (device_id, ts) DO UPDATE SET
    attributes = EXCLUDED.attributes, mapping_version = EXCLUDED.mapping_version
WHERE telemetry.position_attributes.mapping_version <> EXCLUDED.mapping_version
   OR telemetry.position_attributes.attributes <> EXCLUDED.attributes
"""
_encode = msgspec.json.encode


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


# The short read of the fast path: two fixes before the window at 1 Hz, with room.
PEEK_MS = 5_000
# The full read reaches this much further back than the alerts' lookback, so the record
# before a change (its start, for `alerts.read_from_ms`) is nearly always in it.
LOOKBACK_MARGIN_MS = 60_000


class DomainOutputs:
    """The `WindowHandler` the domain stage runs in production."""

    def __init__(
        self,
        source: ConfigSource,
        settings: TimingSettings = DEFAULT_SETTINGS,
        race: Race | None = None,
    ) -> None:
        self.source = source
        self.settings = settings
        self.race = race or Race()
        # Set by the runner when it calls `prefilter` first (which writes attributes).
        self.prefiltering = False
        self.fast_windows = 0

    async def prefilter(self, conn: DbConnection, windows: list[Window]) -> list[Window]:
        """The common case for a whole notice at once, in the caller's transaction
        (holding every device's lock): decoded attributes for every window, and the
        windows that need nothing more (the device's newest records, on a clear road:
        `appended_without_hits`, `Race.ordinary`, no alert still open) are done. The
        rest are returned for `__call__`, one device per transaction."""
        snapshot = await self.source.current(conn)
        recent = await read_many(conn, {w.device_id: w.start_ms - PEEK_MS for w in windows})
        await write_attributes_many(
            conn, snapshot, [(w, recent.get(w.device_id, [])) for w in windows]
        )
        maybe: list[Window] = []
        for w in windows:
            records = recent.get(w.device_id, [])
            entries = snapshot.entries_of(w.device_id)
            if appended_without_hits(
                records, w, snapshot.index, self.settings
            ) and self.race.ordinary(snapshot, entries, w, records):
                maybe.append(w)
        since = {e.id: w.start_ms for w in maybe for e in snapshot.entries_of(w.device_id)}
        changing = await self.race.changing(conn, since)
        done = {
            w.device_id
            for w in maybe
            if not any(e.id in changing for e in snapshot.entries_of(w.device_id))
        }
        self.fast_windows += len(done)
        return [w for w in windows if w.device_id not in done]

    async def __call__(self, conn: DbConnection, window: Window) -> None:
        """One device's window the fast path could not settle (its attributes are
        written by `prefilter`; when called alone, here)."""
        snapshot = await self.source.current(conn)
        entries = snapshot.entries_of(window.device_id)
        lo, hi = affected_span(window.start_ms, window.end_ms, self.settings)
        ctx_lo, ctx_hi = context_span(lo, hi, self.settings)
        # One read serves timing (its context) and alerts (their lookback, with room for
        # a gap before the change), up to the newest record: a late window may change
        # alerts that run past it.
        lookback = alert_lookback_ms(snapshot, entries)
        start = min(ctx_lo, window.start_ms - lookback - LOOKBACK_MARGIN_MS)
        fixes = await read_range(conn, window.device_id, start, FOREVER_MS if entries else ctx_hi)
        if not self.prefiltering:
            await write_attributes(conn, snapshot, window, fixes)
        unchanged = appended_without_hits(fixes, window, snapshot.index, self.settings)
        for entry in entries:
            timing = Diff()
            if not unchanged:
                timing = await write_timing(conn, snapshot, entry, fixes, (lo, hi), self.settings)
            await self.race.after_window(
                conn, snapshot, entry, window.start_ms, fixes, start, timing
            )

    async def tick(self, conn: DbConnection) -> None:
        """The clock's part (race.py), by one instance at a time: results that time
        decides, signals lost, and the pairs whose officials' rows changed."""
        key = "processor:domain:tick"
        if not await conn.fetchval("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", key):
            return
        try:
            snapshot = await self.source.current(conn)
            previous, self.source.previous_manual = self.source.previous_manual, None
            if previous is not None:
                moved: set[int] = set()
                for stage_id, entry_id in sorted(previous.pairs() | snapshot.manual.pairs()):
                    entry = snapshot.entry(entry_id)
                    if entry is not None and await self.race.settle_locked(
                        conn, snapshot, stage_id, entry
                    ):
                        moved.add(stage_id)
                for stage_id in sorted(moved):
                    stage = snapshot.config.stage(stage_id)
                    if stage is not None:
                        async with conn.transaction():
                            await self.race.rank(conn, snapshot, stage)
            await self.race.tick(conn, snapshot)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", key)


def appended_without_hits(
    fixes: list[Position], window: Window, index: GeofenceIndex | None, settings: TimingSettings
) -> bool:
    """The in-order fast path (see `timing.any_hits`): the window's fixes extend the
    device's track (`in_order`) and none of the segments they add touches a geofence,
    so no timing record in the affected span can change and nothing needs recomputing."""
    if index is None or not in_order(fixes, window):
        return False
    valid = [p for p in fixes if p.fix_valid and p.ts_ms <= window.end_ms]
    first_new = next((i for i, p in enumerate(valid) if p.ts_ms >= window.start_ms), len(valid))
    return not any_hits(valid[max(0, first_new - 2) :], index, settings)


def in_order(records: list[Position], window: Window) -> bool:
    """Whether the window's records came after everything stored before them: every
    record later in time also arrived later. Those later records are then in later
    notices, not handled yet (notices are handled in order), so the window appends to
    what the stage has seen. A record that arrived before them (a buffered upload
    filling history) makes the window a re-cut of history: the full path."""
    inside = [p for p in records if window.start_ms <= p.ts_ms <= window.end_ms]
    later = [p for p in records if p.ts_ms > window.end_ms]
    if not inside:
        return False
    return not later or min(p.received_at_ms for p in later) >= max(
        p.received_at_ms for p in inside
    )


async def write_attributes(
    conn: DbConnection, snapshot: Snapshot, window: Window, fixes: Iterable[Position]
) -> None:
    await write_attributes_many(conn, snapshot, [(window, fixes)])


async def write_attributes_many(
    conn: DbConnection, snapshot: Snapshot, windows: Iterable[tuple[Window, Iterable[Position]]]
) -> None:
    devices: list[str] = []
    times: list[int] = []
    decoded: list[str] = []
    for window, fixes in windows:
        mappings = snapshot.mappings.for_model(snapshot.models.get(window.device_id))
        if not mappings:
            continue
        for p in fixes:
            if window.start_ms <= p.ts_ms <= window.end_ms:
                devices.append(window.device_id)
                times.append(p.ts_ms)
                # Read back from the database, byte strings in `io` are hex text, as the
                # mapping expects.
                decoded.append(_encode(decode_attributes(p.io, mappings)).decode())  # type: ignore[arg-type]
    if devices:
        await conn.execute(_ATTRIBUTES, devices, times, decoded, snapshot.mappings.version)


async def write_timing(
    conn: DbConnection,
    snapshot: Snapshot,
    entry: EntryRef,
    fixes: list[Position],
    span: tuple[int, int],
    settings: TimingSettings,
) -> Diff:
    """Replace the automatic timing records of `entry` in `span` by a fresh computation."""
    crossings = timing_crossings(snapshot, entry, fixes, span, settings)
    old = await store.of_entry(conn, "timing_records", entry.id, span[0], span[1])
    new = [timing_output(snapshot, entry, c) for c in crossings]
    return await store.apply(conn, TIMING_RECORDS, store.diff(old, new))


def timing_output(snapshot: Snapshot, entry: EntryRef, c: Crossing) -> Output:
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
        {
            "stage": c.stage_id,
            "entry": entry.id,
            "geofence": c.geofence_id,
            "kind": record_kind(c),
            "ordinal": c.ordinal,
            "crossed_at": c.crossed_at_ms,
            "status": "superseded" if manual else "valid",
            "fix_before_at": c.before.ts_ms,
            "fix_after_at": c.after.ts_ms,
            "details": record_details(c),
        },
    )


def timing_crossings(
    snapshot: Snapshot,
    entry: EntryRef,
    fixes: list[Position],
    span: tuple[int, int],
    settings: TimingSettings,
) -> list[Crossing]:
    """The automatic records `write_timing` stores for `entry` in `span` (pure).

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

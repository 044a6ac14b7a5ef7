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
from processor.domain.timing import (
    DEFAULT_SETTINGS,
    Crossing,
    TimingSettings,
    affected_span,
    context_span,
    recompute_window,
)
from processor.domain_runner.config_source import ConfigSource, EntryRef, Snapshot
from processor.domain_runner.fixes import read_range
from processor.domain_runner.notices import Window
from processor.storage.pool import DbConnection

_UPSERT = """
INSERT INTO public.timing_records AS t
    (key, stage, entry, geofence, kind, ordinal, crossed_at, source, status,
     fix_before_at, fix_after_at, details, updated_at)
SELECT r.key, r.stage, r.entry, r.geofence, r.kind, r.ordinal, to_timestamp(r.crossed_ms / 1000.0),
       'auto', 'valid', to_timestamp(r.before_ms / 1000.0), to_timestamp(r.after_ms / 1000.0),
       r.details::json, now()
FROM unnest($1::text[], $2::int[], $3::int[], $4::int[], $5::text[], $6::int[], $7::bigint[],
            $8::bigint[], $9::bigint[], $10::text[])
     AS r(key, stage, entry, geofence, kind, ordinal, crossed_ms, before_ms, after_ms, details)
ON CONFLICT (key) DO UPDATE SET
    crossed_at = EXCLUDED.crossed_at, status = EXCLUDED.status, kind = EXCLUDED.kind,
    fix_before_at = EXCLUDED.fix_before_at, fix_after_at = EXCLUDED.fix_after_at,
    details = EXCLUDED.details, updated_at = now()
WHERE t.source <> 'manual'
  AND (t.crossed_at, t.status, t.details::text)
      IS DISTINCT FROM (EXCLUDED.crossed_at, EXCLUDED.status, EXCLUDED.details::text)
RETURNING t.key, t.stage, t.entry, t.geofence, t.kind, t.crossed_at, (t.xmax = 0) AS inserted
"""
_STALE = """
DELETE FROM public.timing_records
WHERE source = 'auto' AND entry = $1
  AND crossed_at >= to_timestamp($2 / 1000.0) AND crossed_at < to_timestamp($3 / 1000.0)
  AND NOT (key = ANY($4::text[]))
RETURNING key, stage, entry, geofence, kind, crossed_at
"""
_OUTBOX = """
INSERT INTO telemetry.outbox (event_key, kind, payload)
SELECT k, 'timing_record.' || c, p::jsonb
FROM unnest($1::text[], $2::text[], $3::text[]) AS x(k, c, p)
ON CONFLICT (event_key) DO NOTHING
"""
_ATTRIBUTES = """
INSERT INTO telemetry.position_attributes (device_id, ts, attributes, mapping_version)
SELECT $1, to_timestamp(t / 1000.0), a::jsonb, $4
FROM unnest($2::bigint[], $3::text[]) AS x(t, a)
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


def record_details(c: Crossing) -> str:
    return _encode(
        {
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
    ).decode()


class DomainOutputs:
    """The `WindowHandler` the domain stage runs in production."""

    def __init__(self, source: ConfigSource, settings: TimingSettings = DEFAULT_SETTINGS) -> None:
        self.source = source
        self.settings = settings

    async def __call__(self, conn: DbConnection, window: Window) -> None:
        snapshot = await self.source.current(conn)
        lo, hi = affected_span(window.start_ms, window.end_ms, self.settings)
        ctx_lo, ctx_hi = context_span(lo, hi, self.settings)
        fixes = await read_range(conn, window.device_id, ctx_lo, ctx_hi)
        await write_attributes(conn, snapshot, window, fixes)
        for entry in snapshot.entries_of(window.device_id):
            await write_timing(conn, snapshot, entry, fixes, (lo, hi), self.settings)


async def write_attributes(
    conn: DbConnection, snapshot: Snapshot, window: Window, fixes: Iterable[Position]
) -> None:
    mappings = snapshot.mappings.for_model(snapshot.models.get(window.device_id))
    if not mappings:
        return
    inside = [p for p in fixes if window.start_ms <= p.ts_ms <= window.end_ms]
    # Read back from the database, byte strings in `io` are hex text, as the mapping expects.
    decoded = [_encode(decode_attributes(p.io, mappings)).decode() for p in inside]  # type: ignore[arg-type]
    if inside:
        await conn.execute(
            _ATTRIBUTES,
            window.device_id,
            [p.ts_ms for p in inside],
            decoded,
            snapshot.mappings.version,
        )


async def write_timing(
    conn: DbConnection,
    snapshot: Snapshot,
    entry: EntryRef,
    fixes: list[Position],
    span: tuple[int, int],
    settings: TimingSettings,
) -> None:
    """Replace the automatic timing records of `entry` in `span` by a fresh computation."""
    crossings = timing_crossings(snapshot, entry, fixes, span, settings)
    keys = [record_key(entry, c) for c in crossings]
    changed: list[Any] = []
    if crossings:
        changed = await conn.fetch(
            _UPSERT,
            keys,
            [c.stage_id for c in crossings],
            [entry.id] * len(crossings),
            [c.geofence_id for c in crossings],
            [record_kind(c) for c in crossings],
            [c.ordinal for c in crossings],
            [c.crossed_at_ms for c in crossings],
            [c.before.ts_ms for c in crossings],
            [c.after.ts_ms for c in crossings],
            [record_details(c) for c in crossings],
        )
    removed = await conn.fetch(_STALE, entry.id, span[0], span[1], keys)
    events = [(r, "created" if r["inserted"] else "updated") for r in changed]
    events += [(r, "deleted") for r in removed]
    if events:
        await conn.execute(
            _OUTBOX,
            [_event_key(r, change) for r, change in events],
            [change for _, change in events],
            [_event_payload(r, change) for r, change in events],
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


def _event_key(row: Any, change: str) -> str:
    # The record's state is part of the key: the same change replayed adds nothing,
    # a different one (a re-timed crossing) is a new event.
    return f"timing_record:{row['key']}:{change}:{row['crossed_at'].isoformat()}"


def _event_payload(row: Any, change: str) -> str:
    return _encode(
        {
            "collection": "timing_records",
            "change": change,
            "key": row["key"],
            "stage": row["stage"],
            "entry": row["entry"],
            "geofence": row["geofence"],
            "kind": row["kind"],
            "crossed_at": row["crossed_at"].isoformat(),
        }
    ).decode()

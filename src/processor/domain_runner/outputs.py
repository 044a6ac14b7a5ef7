"""The domain stage's handler: timing records and decoded attributes for one window.

Everything written is a function of stored positions and the configuration (rule 7):
for the changed range it recomputes the crossings of every segment that can be affected,
upserts them under deterministic keys, removes automatic records the re-cut no longer
produces, and writes an outbox event for every actual change, all in the caller's
transaction. Rows with `source = 'manual'` are never written or deleted here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgspec
import structlog

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
from processor.domain_runner.fixes import first_received_after, read_many, read_range
from processor.domain_runner.locks import try_lock_clock, unlock_clock
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
log = structlog.get_logger(__name__)


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


# Windows the fast path checks between two yields to the event loop (each ~1–3 ms).
YIELD_EVERY = 20
# The short read of the fast path: two fixes before the window at 1 Hz, with room.
PEEK_MS = 5_000
# The full read reaches this much further back than the alerts' lookback, so the record
# before a change (its start, for `alerts.read_from_ms`) is nearly always in it.
LOOKBACK_MARGIN_MS = 60_000


@dataclass(frozen=True, slots=True)
class Quiet:
    """What the fast path found of a window: whether it extends the track, and which
    parts of it are unchanged."""

    ordered: bool
    timing: bool
    alerts: bool

    @property
    def all(self) -> bool:
        return self.timing and self.alerts


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
        # What `prefilter` found quiet in the windows it leaves to `__call__`.
        self._quiet: dict[str, Quiet] = {}

    async def prefilter(self, conn: DbConnection, windows: list[Window]) -> list[Window]:
        """The common case for a whole notice at once, in the caller's transaction
        (holding every device's lock): decoded attributes for every window, and the
        windows that need nothing more (the device's newest records, on a clear road:
        `appended_without_hits`, `Race.ordinary`, no alert still open) are done. The
        rest are returned for `__call__`, one device per transaction."""

        snapshot = await self.source.current(conn)
        # Enough before each window for the tight timing scope (`timing_scope`).
        back = PEEK_MS + 2 * (self.settings.context_ms - self.settings.max_gap_ms)
        # The IO elements only of the window's records: its attributes and `Race.ordinary`
        # (a panic button) look at nothing earlier.
        recent = await read_many(
            conn,
            {w.device_id: (w.start_ms - back, w.end_ms) for w in windows},
            io_from={w.device_id: w.start_ms for w in windows},
        )
        later = await first_received_after(conn, {w.device_id: w.end_ms for w in windows})
        await write_attributes_many(
            conn, snapshot, [(w, recent.get(w.device_id, [])) for w in windows]
        )
        timing_quiet: dict[str, bool] = {}
        ordered: dict[str, bool] = {}
        calm: list[Window] = []
        unsure: list[Window] = []
        for n, w in enumerate(windows):
            if n % YIELD_EVERY == YIELD_EVERY - 1:
                # Thousands of windows in a lagging batch: let the core (same event loop
                # under `run --with-domain`) and /metrics run in between.
                await asyncio.sleep(0)
            records = recent.get(w.device_id, [])
            entries = snapshot.entries_of(w.device_id)
            ordered[w.device_id] = in_order(records, w, later.get(w.device_id))
            timing_quiet[w.device_id] = ordered[w.device_id] and appended_without_hits(
                records, w, snapshot.index, self.settings
            )
            if ordered[w.device_id]:
                if self.race.ordinary(snapshot, entries, w, records):
                    calm.append(w)
                elif timing_quiet[w.device_id]:
                    unsure.append(w)
        # A second look, knowing when the entries are on a stage, at the windows with
        # something out of the ordinary (mostly cars standing still: at their start, or
        # after their finish): one read for all of them. Only for windows that cross no
        # geofence: their stored start and finish records are the whole story (a window
        # crossing the start line would find no active span yet).
        active = await self.race.active_spans_of(
            conn, snapshot, (e for w in unsure for e in snapshot.entries_of(w.device_id))
        )
        calm += [
            w
            for w in unsure
            if self.race.ordinary(
                snapshot, snapshot.entries_of(w.device_id), w, recent[w.device_id], active
            )
        ]
        since = {e.id: w.start_ms for w in calm for e in snapshot.entries_of(w.device_id)}
        calm_devices = {w.device_id for w in calm}
        changing = await self.race.changing(conn, since)
        self._quiet |= {
            w.device_id: Quiet(
                ordered=ordered[w.device_id],
                timing=timing_quiet[w.device_id],
                alerts=w.device_id in calm_devices
                and not any(e.id in changing for e in snapshot.entries_of(w.device_id)),
            )
            for w in windows
        }
        timed = await self._timing_batch(conn, snapshot, windows, recent, back)
        remaining = [
            w for w in windows if not self._quiet[w.device_id].all and w.device_id not in timed
        ]
        log.debug(
            "domain_fast_path",
            windows=len(windows),
            settled=len(windows) - len(remaining),
            not_in_order=sum(1 for v in ordered.values() if not v),
            timing_hits=sum(1 for d, v in timing_quiet.items() if ordered[d] and not v),
            alerts_possible=sum(
                1
                for w in windows
                if self._quiet[w.device_id].ordered and not self._quiet[w.device_id].alerts
            ),
            timed_in_batch=len(timed),
        )
        left = {w.device_id for w in remaining}
        for w in windows:  # done here: nothing left for `__call__`
            if w.device_id not in left:
                self._quiet.pop(w.device_id, None)
        return remaining

    async def _timing_batch(
        self,
        conn: DbConnection,
        snapshot: Snapshot,
        windows: list[Window],
        recent: dict[str, list[Position]],
        back: int,
    ) -> set[str]:
        """The next most common case, for the whole batch at once: windows that extend
        their track with no alert possible, but touch a geofence (at 1 Hz with a
        geofence every few hundred metres, most windows of a lagging batch). Their
        timing in one read of old outputs and one write; then the pairs whose timing
        changed are settled (penalties, result, ranking), still under the batch's locks.
        Returns the devices done."""
        plans: list[tuple[Window, EntryRef, tuple[int, int], list[Position]]] = []
        for n, w in enumerate(windows):
            quiet = self._quiet[w.device_id]
            if quiet.timing or not quiet.alerts:  # nothing to time, or the full path
                continue
            if n % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)
            general = affected_span(w.start_ms, w.end_ms, self.settings)
            span, track = timing_scope(
                recent[w.device_id], w, general, w.start_ms - back, self.settings
            )
            if span == general:
                continue  # a gap before the window: the per-device path reads further back
            plans += [(w, e, span, track) for e in snapshot.entries_of(w.device_id)]
        if not plans:
            return set()
        old = await store.of_entries(conn, "timing_records", {e.id: s for _, e, s, _ in plans})
        diffs = []
        for n, (_, entry, span, track) in enumerate(plans):
            if n % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)
            crossings = timing_crossings(snapshot, entry, track, span, self.settings)
            new = [timing_output(snapshot, entry, c) for c in crossings]
            diffs.append((entry, store.diff(old[entry.id], new)))

        await store.apply(conn, TIMING_RECORDS, store.merge(d for _, d in diffs))
        settling = []
        for entry, d in diffs:
            changed: dict[int, set[int]] = {}
            for o, _ in d.changes():
                if o.stage is not None and _settles(o):
                    changed.setdefault(o.stage, set()).add(o.data["geofence"])
            # In order: only a passage whose zone exit just came is measured.
            settling += [(s, entry, _only(fences)) for s, fences in changed.items()]
        await self.race.settle_many(conn, snapshot, settling)
        return {w.device_id for w, _, _, _ in plans}

    async def __call__(self, conn: DbConnection, window: Window) -> None:
        """One device's window the fast path could not settle (its attributes are
        written by `prefilter`; when called alone, here)."""
        snapshot = await self.source.current(conn)
        entries = snapshot.entries_of(window.device_id)
        quiet = self._quiet.pop(window.device_id, None)
        lo, hi = affected_span(window.start_ms, window.end_ms, self.settings)
        ctx_lo, ctx_hi = context_span(lo, hi, self.settings)
        # One read serves timing (its context) and alerts (their lookback, with room for
        # a gap before the change), up to the newest record: a late window may change
        # alerts that run past it.
        start = ctx_lo
        if quiet is None or not quiet.alerts:
            lookback = alert_lookback_ms(snapshot, entries)
            start = min(ctx_lo, window.start_ms - lookback - LOOKBACK_MARGIN_MS)
        # A window that extends the track needs nothing after it (later records are the
        # later windows'); one that re-cuts history, everything up to the newest.
        end = FOREVER_MS
        if not entries:
            end = ctx_hi
        elif quiet is not None and quiet.ordered:
            end = window.end_ms + self.settings.context_ms
        fixes = await read_range(conn, window.device_id, start, end)
        if quiet is None:
            await write_attributes(conn, snapshot, window, fixes)
            later = [p for p in fixes if p.ts_ms > window.end_ms]
            first_later = min((p.received_at_ms for p in later), default=None)
            is_ordered = in_order(fixes, window, first_later)
            timing_quiet = is_ordered and appended_without_hits(
                fixes, window, snapshot.index, self.settings
            )
            quiet = Quiet(is_ordered, timing_quiet, False)
        unchanged = quiet.timing  # from `prefilter`, or just computed: not twice
        span, track = timing_scope(fixes, window, (lo, hi), start, self.settings)
        for entry in entries:
            timing = Diff()
            if not unchanged:
                timing = await write_timing(conn, snapshot, entry, track, span, self.settings)
            await self.race.after_window(
                conn,
                snapshot,
                entry,
                window.start_ms,
                fixes,
                start,
                timing,
                alerts=not quiet.alerts,
            )

    async def tick(self, conn: DbConnection) -> None:
        """The clock's part (race.py), by one instance at a time: results that time
        decides, signals lost, and the pairs whose officials' rows changed."""
        if not await try_lock_clock(conn):
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
            await unlock_clock(conn)


def _only(fences: set[int]) -> Callable[[int, int], bool]:
    def remeasure(fence: int, exit_ms: int) -> bool:
        return fence in fences

    return remeasure


def _settles(o: Output) -> bool:
    """Whether a changed timing record of an in-order window can change its pair's
    result or penalties now: a waypoint or zone entry only counts once the finish or the
    zone exit comes, and that record's own change settles the pair then."""
    return o.data["kind"] in ("start_line", "split_line", "finish_line", "zone_exit")


def appended_without_hits(
    fixes: list[Position], window: Window, index: GeofenceIndex | None, settings: TimingSettings
) -> bool:
    """The in-order fast path (see `timing.any_hits`), for a window that extends the
    device's track (`in_order`, the caller's check): none of the segments its fixes add
    touches a geofence, so no timing record in the affected span can change and nothing
    needs recomputing."""
    if index is None:
        return False
    valid = [p for p in fixes if p.fix_valid and p.ts_ms <= window.end_ms]
    first_new = next((i for i, p in enumerate(valid) if p.ts_ms >= window.start_ms), len(valid))
    return not any_hits(valid[max(0, first_new - 2) :], index, settings)


def timing_scope(
    fixes: list[Position],
    window: Window,
    span: tuple[int, int],
    read_from_ms: int,
    settings: TimingSettings,
) -> tuple[tuple[int, int], list[Position]]:
    """The crossings a window can change, and the fixes that decide them: tighter than
    `affected_span`/`context_span`, which must assume the longest segment
    (`max_gap_ms`) because they know no fixes.

    Knowing them: the new fixes change the segments from the valid fix before the
    window to the one after it, hence raw hits there; a crossing's verdict depends on
    hits of its geofence less than d = max(debounce, 2 × zone debounce) away (timing.py),
    so crossings in [before − d, after + d] may change, and those are decided by the hits
    within d of them: the segments that reach [before − 2d, after + 2d]. At 1 Hz that is
    ~45 fixes instead of the ~170 of the general bound. Falls back to the general bound
    when the read does not reach that far back (a gap before the window).
    """
    d = settings.context_ms - settings.max_gap_ms
    valid = [p for p in fixes if p.fix_valid]
    before = max((p.ts_ms for p in valid if p.ts_ms < window.start_ms), default=None)
    after = min((p.ts_ms for p in valid if p.ts_ms > window.end_ms), default=window.end_ms)
    if before is None or before - 2 * d <= read_from_ms:
        return span, fixes
    lo, hi = before - d, after + d + 1
    first = max((i for i, p in enumerate(valid) if p.ts_ms < lo - d), default=0)
    last = min((i for i, p in enumerate(valid) if p.ts_ms > hi + d), default=len(valid) - 1)
    return (lo, hi), valid[first : last + 1]


def in_order(records: list[Position], window: Window, first_later_ms: int | None) -> bool:
    """Whether the window extends the device's track: every record later in time
    (`first_later_ms`: when the earliest-received of them arrived, None if none) also
    arrived later. Those later records are then in later notices, not handled yet
    (notices are handled in order). A later record that arrived before the window's
    (the window is a buffered upload filling history) makes it a re-cut: the full path."""
    inside = [p for p in records if window.start_ms <= p.ts_ms <= window.end_ms]
    if not inside:
        return False
    return first_later_ms is None or first_later_ms >= max(p.received_at_ms for p in inside)


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

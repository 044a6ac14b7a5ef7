"""The full path: one device's window the fast path could not settle.

Late data, a possible alert, a gap before the window, or a window handled alone: in
a transaction of its own holding the device's lock (the runner's), one read covers
the timing context and the alerts' lookback (up to the newest record for a re-cut of
history); then, for each entry the device carries, its timing over the tight scope
(`timing_records.plan_timing`), its alerts from the window's start on
(`alerts.plan_alerts`, unless the fast path found none possible), each plan written
(`store.apply`), and the pairs whose
timing changed, or with a speed-zone passage the new records fall into, settled
(`Race.settle_many`, once for all of them).

Invariant: what it writes is what a recomputation of the device's whole history
would write for the window's changes (windows tile; the alerts' locality contract);
the verdict a `CheckedWindow` carries only spares work whose result it already knows.
"""

from __future__ import annotations

from processor.core.position import Position
from processor.domain.rows import TimingRow
from processor.domain.standing import Remeasure
from processor.domain.timing import TimingSettings, affected_span, context_span
from processor.domain.windows import appended_without_hits, in_order, timing_scope
from processor.domain_runner import store
from processor.domain_runner.alerts import SPAN_AND_ZONE_KINDS, alert_lookback_ms, plan_alerts
from processor.domain_runner.attributes import write_attributes
from processor.domain_runner.config_source import EntryRef, Snapshot
from processor.domain_runner.fast_path import CheckedWindow, Verdict
from processor.domain_runner.fixes import read_range
from processor.domain_runner.notices import Window
from processor.domain_runner.progress import handled_to, mark_handled, nothing_handled_after
from processor.domain_runner.race import FOREVER_MS, Race
from processor.domain_runner.store import Diff
from processor.domain_runner.tables import ALERTS, TIMING_FACTS, TIMING_RECORDS
from processor.domain_runner.timing_records import plan_timing
from processor.storage.pool import DbConnection

# The full read reaches this much further back than the alerts' lookback, so the record
# before a change (its start, for `alerts.read_from_ms`) is nearly always in it.
LOOKBACK_MARGIN_MS = 60_000


async def handle(
    conn: DbConnection,
    snapshot: Snapshot,
    window: Window,
    settings: TimingSettings,
    race: Race,
) -> None:
    """The window's outputs (its attributes too when the fast path did not see it)."""
    entries = snapshot.entries_of(window.device_id)
    verdict = window.verdict if isinstance(window, CheckedWindow) else None
    lo, hi = affected_span(window.start_ms, window.end_ms, settings)
    ctx_lo, ctx_hi = context_span(lo, hi, settings)
    # One read serves timing (its context) and alerts (their lookback, with room for
    # a gap before the change), up to the newest record: a late window may change
    # alerts that run past it.
    start = ctx_lo
    if verdict is None or not verdict.alerts:
        lookback = alert_lookback_ms(snapshot, entries)
        start = min(ctx_lo, window.start_ms - lookback - LOOKBACK_MARGIN_MS)
    # A window that extends the track needs nothing after it (later records are the
    # later windows'); one that re-cuts history, everything up to the newest.
    end = FOREVER_MS
    if not entries:
        end = ctx_hi
    elif verdict is not None and verdict.ordered:
        end = window.end_ms + settings.context_ms
    fixes = await read_range(conn, window.device_id, start, end)
    if verdict is None:
        await write_attributes(conn, snapshot, [(window, fixes)])
        later = [p for p in fixes if p.ts_ms > window.end_ms]
        first_later = min((p.received_at_ms for p in later), default=None)
        progress = await handled_to(conn, [window.device_id])
        await mark_handled(conn, [window])
        is_ordered = in_order(fixes, window, first_later) and nothing_handled_after(
            progress, window
        )
        timing_quiet = is_ordered and appended_without_hits(fixes, window, snapshot.index, settings)
        verdict = Verdict(is_ordered, timing_quiet, False)
    span, track = timing_scope(fixes, window, (lo, hi), start, settings)
    settling: list[Settle] = []
    for entry in entries:
        timing: Diff[TimingRow] = Diff()
        if not verdict.timing:  # from `prefilter`, or just computed: not twice
            plan = await plan_timing(conn, snapshot, entry, track, span, settings)
            timing = await store.apply(conn, TIMING_RECORDS, plan.diff)
        settling += await after_timing(
            conn,
            snapshot,
            race,
            entry,
            window.start_ms,
            fixes,
            start,
            timing,
            alerts=not verdict.alerts,
        )
    # Every entry's pairs at once: the stages' locks are taken once (locks.py).
    await race.settle_many(conn, snapshot, settling)


Settle = tuple[int, EntryRef, Remeasure | None]


async def after_timing(
    conn: DbConnection,
    snapshot: Snapshot,
    race: Race,
    entry: EntryRef,
    first_changed_ms: int,
    fixes: list[Position],
    covered_from_ms: int,
    timing: Diff[TimingRow],
    *,
    alerts: bool = True,
) -> list[Settle]:
    """Alerts from the changed records (`alerts`: else the fast path found none
    possible); returns the pairs to settle: every pair whose timing changed, or with a
    speed-zone passage the changed records fall into (a late fix inside the zone
    changes its measurement, not its crossings)."""
    records = await store.of_entry(conn, TIMING_FACTS, entry.id, 0, FOREVER_MS, SPAN_AND_ZONE_KINDS)
    if alerts:
        now = race.clock()
        plan = await plan_alerts(
            conn, snapshot, entry, first_changed_ms, fixes, covered_from_ms, records, now
        )
        await store.apply(conn, ALERTS, plan.diff)
    changed: dict[int, set[int]] = {}
    for o, _ in timing.changes():
        if o.stage is not None:
            changed.setdefault(o.stage, set()).add(o.data.geofence)
    for r in records.values():
        if r.stage is not None and r.data.kind == "zone_exit" and r.at_ms >= first_changed_ms:
            changed.setdefault(r.stage, set())

    def remeasure(fences: set[int]) -> Remeasure:
        return lambda fence, left_ms: fence in fences or left_ms >= first_changed_ms

    return [(s, entry, remeasure(fences)) for s, fences in changed.items()]

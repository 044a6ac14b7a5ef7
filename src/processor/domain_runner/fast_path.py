"""The fast path: a whole batch's ordinary windows, checked and settled at once.

In the runner's transaction holding every device lock of a batch part, `prefilter`:

1. reads every device's records of its window and the 25 s before it (one query) and
   whether a later record arrived earlier (another): a window extends its track
   (`windows.in_order`) unless it is a buffered upload filling history;
2. writes every window's decoded attributes (one statement);
3. per window, in Python: whether the segments it adds touch a geofence
   (`windows.appended_without_hits`) and whether its records can open no alert
   (`ordinary.ordinary`); for the windows out of the ordinary that cross no geofence,
   a second look knowing the entries' active spans (one read); one query for the
   entries with a stored alert that can still change (`alerts.changing`);
4. windows in order with no alert possible are done here: those without a geofence
   hit need nothing; those with one get their timing over the tight scope
   (`windows.timing_scope`; one read of old outputs, one write of all the diffs), then
   the pairs whose timing changed are settled together (`Race.settle_many`, once).

The rest are returned, each as a `CheckedWindow` carrying what was found of it
(`Verdict`), for the full path (full_path.py), one device per transaction.

Invariant: a window settled here gets exactly the outputs the full path would give
it — its timing is recomputed by the same functions over a scope that covers every
crossing it can change, and its alerts are skipped only when no detector can fire
(`domain.ordinary`'s property) and no stored alert can change. Locks: the batch's
device locks (the runner's), then the stages' locks once (`settle_many`), then rows.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog

from processor.core.position import Position
from processor.domain.alerts import ActiveSpan
from processor.domain.ordinary import ordinary
from processor.domain.standing import only, settles_now
from processor.domain.timing import TimingSettings, affected_span
from processor.domain.windows import appended_without_hits, in_order, inside, timing_scope
from processor.domain_runner import store
from processor.domain_runner.alerts import active_spans_of, changing
from processor.domain_runner.attributes import write_attributes
from processor.domain_runner.config_source import EntryRef, Snapshot
from processor.domain_runner.fixes import first_received_after, read_many
from processor.domain_runner.notices import Window
from processor.domain_runner.progress import handled_to, mark_handled, nothing_handled_after
from processor.domain_runner.race import Race
from processor.domain_runner.tables import TIMING_RECORDS
from processor.domain_runner.timing_records import timing_rows
from processor.storage.pool import DbConnection

log = structlog.get_logger(__name__)

# Windows the fast path checks between two yields to the event loop (each ~1–3 ms).
YIELD_EVERY = 20
# The short read of the fast path: two fixes before the window at 1 Hz, with room.
PEEK_MS = 5_000


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the fast path found of a window: whether it extends the track (`ordered`),
    and which of its outputs cannot change (`timing`: no geofence touched; `alerts`:
    no alert can open or change)."""

    ordered: bool
    timing: bool
    alerts: bool

    @property
    def all(self) -> bool:
        return self.timing and self.alerts


@dataclass(frozen=True, slots=True)
class CheckedWindow(Window):
    """A window the fast path left to the full path, with what it found of it."""

    verdict: Verdict


def peek_ms(settings: TimingSettings) -> int:
    """How far before each window the batch reads: enough for the tight timing scope."""
    return PEEK_MS + 2 * (settings.context_ms - settings.max_gap_ms)


async def prefilter(
    conn: DbConnection,
    snapshot: Snapshot,
    windows: list[Window],
    settings: TimingSettings,
    race: Race,
) -> list[Window]:
    """Settle the batch's ordinary windows (the module docstring); return the others,
    as `CheckedWindow`s."""
    back = peek_ms(settings)
    # The IO elements only of the window's records: its attributes and `ordinary`
    # (a panic button) look at nothing earlier.
    recent = await read_many(
        conn,
        {w.device_id: (w.start_ms - back, w.end_ms) for w in windows},
        io_from={w.device_id: w.start_ms for w in windows},
    )
    later = await first_received_after(conn, {w.device_id: w.end_ms for w in windows})
    # Handled out of order (another instance, batches the core committed out of order)?
    # Then not in order, whatever the arrival times say (progress.py). Every window of
    # the part is handled by the end of the batch (here or on the full path): marked now,
    # in this transaction, the mark can only send a later decision to the full path.
    progress = await handled_to(conn, (w.device_id for w in windows))
    await mark_handled(conn, windows)
    await write_attributes(conn, snapshot, [(w, recent.get(w.device_id, [])) for w in windows])
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
        ordered[w.device_id] = in_order(
            records, w, later.get(w.device_id)
        ) and nothing_handled_after(progress, w)
        timing_quiet[w.device_id] = ordered[w.device_id] and appended_without_hits(
            records, w, snapshot.index, settings
        )
        if ordered[w.device_id]:
            if window_ordinary(snapshot, w, records):
                calm.append(w)
            elif timing_quiet[w.device_id]:
                unsure.append(w)
    # A second look, knowing when the entries are on a stage, at the windows with
    # something out of the ordinary (mostly cars standing still: at their start, or
    # after their finish): one read for all of them. Only for windows that cross no
    # geofence: their stored start and finish records are the whole story (a window
    # crossing the start line would find no active span yet).
    active = await active_spans_of(
        conn,
        snapshot,
        (e for w in unsure for e in snapshot.entries_of(w.device_id)),
        race.clock(),
    )
    calm += [w for w in unsure if window_ordinary(snapshot, w, recent[w.device_id], active)]
    since = {e.id: w.start_ms for w in calm for e in snapshot.entries_of(w.device_id)}
    calm_devices = {w.device_id for w in calm}
    open_alerts = await changing(conn, since)
    verdicts = {
        w.device_id: Verdict(
            ordered=ordered[w.device_id],
            timing=timing_quiet[w.device_id],
            alerts=w.device_id in calm_devices
            and not any(e.id in open_alerts for e in snapshot.entries_of(w.device_id)),
        )
        for w in windows
    }
    timed = await _timing_batch(conn, snapshot, windows, verdicts, recent, back, settings, race)
    remaining: list[Window] = [
        CheckedWindow(w.device_id, w.start_ms, w.end_ms, verdicts[w.device_id])
        for w in windows
        if not verdicts[w.device_id].all and w.device_id not in timed
    ]
    log.debug(
        "domain_fast_path",
        windows=len(windows),
        settled=len(windows) - len(remaining),
        not_in_order=sum(1 for v in ordered.values() if not v),
        timing_hits=sum(1 for d, v in timing_quiet.items() if ordered[d] and not v),
        alerts_possible=sum(1 for v in verdicts.values() if v.ordered and not v.alerts),
        timed_in_batch=len(timed),
    )
    return remaining


def window_ordinary(
    snapshot: Snapshot,
    window: Window,
    records: list[Position],
    active: dict[int, list[ActiveSpan]] | None = None,
) -> bool:
    """`ordinary.ordinary` for every entry the window's device carries: `records` (the
    window and a few seconds before it) hold the device's newest records and every new
    one is ordinary for every detector. With no stored alert that can still change
    (`alerts.changing`), no alert can open or change.

    `active` (entry → its active spans, `alerts.active_spans_of`), when known: a slow fix
    off every active span is ordinary too."""
    new = inside(records, window)
    before = [p for p in records if p.ts_ms < window.start_ms]
    if not new or not before:  # in order: checked with the timing (`in_order`)
        return False
    previous_fix = next((p for p in reversed(before) if p.fix_valid), None)
    for entry in snapshot.entries_of(window.device_id):
        spans = None if active is None else active.get(entry.id, [])
        if not ordinary(
            before[-1],
            previous_fix,
            new,
            snapshot.rules_of(entry.event).alerts,
            snapshot.routes,
            [s.id for s in snapshot.stages_of_event(entry.event)],
            spans,
        ):
            return False
    return True


async def _timing_batch(
    conn: DbConnection,
    snapshot: Snapshot,
    windows: list[Window],
    verdicts: dict[str, Verdict],
    recent: dict[str, list[Position]],
    back: int,
    settings: TimingSettings,
    race: Race,
) -> set[str]:
    """The next most common case, for the whole batch at once: windows that extend
    their track with no alert possible, but touch a geofence (at 1 Hz with a
    geofence every few hundred metres, most windows of a lagging batch). Their
    timing in one read of old outputs and one write; then the pairs whose timing
    changed are settled (penalties, result, ranking), still under the batch's locks.
    Returns the devices done."""
    plans: list[tuple[Window, EntryRef, tuple[int, int], list[Position]]] = []
    for n, w in enumerate(windows):
        verdict = verdicts[w.device_id]
        if verdict.timing or not verdict.alerts:  # nothing to time, or the full path
            continue
        if n % YIELD_EVERY == YIELD_EVERY - 1:
            await asyncio.sleep(0)
        general = affected_span(w.start_ms, w.end_ms, settings)
        span, track = timing_scope(recent[w.device_id], w, general, w.start_ms - back, settings)
        if span == general:
            continue  # a gap before the window: the per-device path reads further back
        plans += [(w, e, span, track) for e in snapshot.entries_of(w.device_id)]
    if not plans:
        return set()
    old = await store.of_entries(conn, TIMING_RECORDS, {e.id: s for _, e, s, _ in plans})
    diffs = []
    for n, (_, entry, span, track) in enumerate(plans):
        if n % YIELD_EVERY == YIELD_EVERY - 1:
            await asyncio.sleep(0)
        new = timing_rows(snapshot, entry, track, span, settings)
        diffs.append((entry, store.diff(old[entry.id], new)))
    await store.apply(conn, TIMING_RECORDS, store.merge(d for _, d in diffs))
    settling = []
    for entry, d in diffs:
        changed: dict[int, set[int]] = {}
        for o, _ in d.changes():
            if o.stage is not None and settles_now(o.data.kind):
                changed.setdefault(o.stage, set()).add(o.data.geofence)
        # In order: only a passage whose zone exit just came is measured.
        settling += [(s, entry, only(fences)) for s, fences in changed.items()]
    await race.settle_many(conn, snapshot, settling)
    return {w.device_id for w, _, _, _ in plans}

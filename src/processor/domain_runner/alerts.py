"""Alerts: the detectors (`processor.domain.alerts`) over stored records, as rows.

After a device's records change from `first_changed_ms` on, `plan_alerts` reads what
the detectors' locality contract asks (`alerts.read_from_ms`, widened to every stored
alert that may still change), detects on it with the entry's active spans (when it is
on a running stage: `active_spans`, from its start and finish records), and replaces
the stored alerts that may change by the detected ones (`merge_recomputed`): a plan,
which the caller writes (`store.apply(conn, ALERTS, plan.diff)`) or, dry, reports.
`signal_lost_now` is the wall clock's part: a device silent on a running stage.

Invariant: an entry's alerts are a function of its device's stored records, its
timing records, the event's rules and the clock, whatever the order windows come in
(the locality contract makes an incremental recomputation equal a full one). Alerts
are the device's rows: written only under its lock (locks.py). Officials work their
status (acknowledged, dismissed: tables.ALERTS keeps it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from processor.core.position import Position
from processor.domain import alerts as detectors
from processor.domain.alerts import ActiveSpan, AlertSpan
from processor.domain.rows import AlertRow, TimingFacts
from processor.domain.standing import active_spans
from processor.domain_runner import store
from processor.domain_runner.config_source import EntryRef, Snapshot
from processor.domain_runner.fixes import read_range
from processor.domain_runner.race import FOREVER_MS, record_inputs
from processor.domain_runner.store import Output, Plan
from processor.domain_runner.tables import ALERTS, TIMING_FACTS
from processor.storage.pool import DbConnection

# What active spans (start, finish) and zone passages need of an entry's timing records.
SPAN_AND_ZONE_KINDS = ("start_line", "finish_line", "zone_exit")


def alert_lookback_ms(snapshot: Snapshot, entries: Iterable[EntryRef]) -> int:
    """How far before a change a window reads so alerts rarely need a second read."""
    return max(
        (detectors.lookback_ms(snapshot.rules_of(e.event).alerts) for e in entries), default=0
    )


def entry_spans(
    snapshot: Snapshot, entry: EntryRef, timing: Iterable[Output[TimingFacts]], now_ms: int
) -> list[ActiveSpan]:
    """`standing.active_spans` of an entry, from its stored timing records (and its
    officials' rows)."""
    timing = list(timing)
    return active_spans(
        snapshot.stages_of_event(entry.event),
        snapshot.config.geofences,
        entry.id,
        lambda stage: record_inputs(snapshot, timing, stage, entry.id),
        now_ms,
    )


async def active_spans_of(
    conn: DbConnection, snapshot: Snapshot, entries: Iterable[EntryRef], now_ms: int
) -> dict[int, list[ActiveSpan]]:
    """`entry_spans` of many entries, from one read of their start, finish and zone
    exit records."""
    by_id = {e.id: e for e in entries}
    if not by_id:
        return {}
    records = await store.of_entries(
        conn, TIMING_FACTS, dict.fromkeys(by_id, (0, FOREVER_MS)), SPAN_AND_ZONE_KINDS
    )
    return {
        e: entry_spans(snapshot, entry, records[e].values(), now_ms) for e, entry in by_id.items()
    }


async def changing(conn: DbConnection, since: Mapping[int, int]) -> set[int]:
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


async def plan_alerts(
    conn: DbConnection,
    snapshot: Snapshot,
    entry: EntryRef,
    first_changed_ms: int,
    fixes: list[Position],
    covered_from_ms: int,
    timing: Mapping[str, Output[TimingFacts]],
    now_ms: int,
) -> Plan[AlertRow]:
    """The entry's alerts after its records changed from `first_changed_ms` on, against
    the stored ones (reads only). `fixes`: the device's records from `covered_from_ms`
    to the newest (read once per window for timing and alerts; read again only when an
    alert needs to look further back). `timing`: the entry's start, finish and zone exit
    records (`SPAN_AND_ZONE_KINDS`), for its active spans."""
    rules = snapshot.rules_of(entry.event).alerts
    active = entry_spans(snapshot, entry, timing.values(), now_ms)
    stored = await store.of_entry(conn, ALERTS, entry.id, 0, FOREVER_MS)
    spans = {k: o.data.span() for k, o in stored.items()}
    before = [p for p in fixes if p.ts_ms < first_changed_ms]
    start = detectors.read_from_ms(
        first_changed_ms,
        max((p.ts_ms for p in before), default=None),
        max((p.ts_ms for p in before if p.fix_valid), default=None),
        rules,
    )
    changing_spans = [s for s in spans.values() if s.may_change_from(first_changed_ms)]
    start = min([start, *(s.started_at_ms - detectors.lookback_ms(rules) for s in changing_spans)])
    if start < covered_from_ms:
        records = await read_range(conn, entry.imei, start, FOREVER_MS)
    else:
        records = [p for p in fixes if p.ts_ms >= start]
    detected = detectors.detect_alerts(records, active, rules, snapshot.routes)
    silent = detectors.open_signal_lost(records[-1] if records else None, now_ms, active, rules)
    if silent is not None and records and records[-1].ts_ms >= first_changed_ms:
        detected.append(silent)
    merged = detectors.merge_recomputed(spans.values(), detected, first_changed_ms)
    return store.plan(stored, [alert_output(entry, s) for s in merged])


async def signal_lost_now(
    conn: DbConnection, snapshot: Snapshot, entry: EntryRef, now_ms: int
) -> None:
    """Open (or escalate) the signal-lost alert of a device silent on a running stage."""
    timing = await store.of_entry(conn, TIMING_FACTS, entry.id, 0, FOREVER_MS, SPAN_AND_ZONE_KINDS)
    active = entry_spans(snapshot, entry, timing.values(), now_ms)
    if not any(s.contains(now_ms) for s in active):
        return
    last = await last_record(conn, entry.imei, now_ms)
    span = detectors.open_signal_lost(last, now_ms, active, snapshot.rules_of(entry.event).alerts)
    if span is None:
        return
    new = alert_output(entry, span)
    stored = await store.of_entry(conn, ALERTS, entry.id, new.at_ms, new.at_ms + 1)
    old = stored.get(new.key)
    if old is not None and old.data.ended_at is not None:
        return  # records already closed the gap
    await store.apply(conn, ALERTS, store.diff({} if old is None else {old.key: old}, [new]))


async def last_record(conn: DbConnection, device_id: str, before_ms: int) -> Position | None:
    found = await read_range(conn, device_id, before_ms, before_ms)
    earlier = [p for p in found if p.ts_ms < before_ms]
    return earlier[-1] if earlier else None


def alert_output(entry: EntryRef, s: AlertSpan) -> Output[AlertRow]:
    return Output(
        "alerts",
        f"auto:{entry.id}:{s.kind}:{s.started_at_ms}",
        entry.event,
        s.stage_id,
        entry.id,
        s.started_at_ms,
        AlertRow.of(entry.event, entry.id, s),
    )

"""Typed output rows (`processor.domain.rows`) encode to exactly the JSON the untyped
dicts did: same keys, same order, same values — `telemetry.domain_outputs.data`, the
published `json` columns and the outbox depend on those bytes."""

from __future__ import annotations

from typing import Any

import msgspec

from processor.domain.alerts import AlertSpan
from processor.domain.attributes import MappingTable
from processor.domain.config import DomainConfig
from processor.domain.results import Evidence, Split, StageResult
from processor.domain.rows import AlertRow, ResultRow, TimingRow
from processor.domain.timing import Crossing, recompute_window
from processor.domain_runner.alerts import alert_output
from processor.domain_runner.config_source import EntryRef, ManualRows, Snapshot
from processor.domain_runner.race import penalty_output, result_output
from processor.domain_runner.tables import ALERTS, STAGE_RESULTS, TIMING_RECORDS
from processor.domain_runner.timing_records import record_details, record_kind, timing_output
from tests.unit.domain.builders import gate, index, straight

ENTRY = EntryRef(5, 1, 17, "crew", "A", "ok", "356307044410016", "FMB920")
_encode = msgspec.json.encode


def _snapshot(manual: ManualRows | None = None) -> Snapshot:
    return Snapshot(DomainConfig(), None, {}, {}, MappingTable([]), manual=manual or ManualRows())


def _crossing() -> Crossing:
    [c] = recompute_window(
        straight((0.0, 0.0), (10.0, 0.0), 20, 36.0), index(gate(1, [(100.0, 20.0), (100.0, -20.0)]))
    )
    return c


def test_a_timing_record_is_the_dict_it_was() -> None:
    c = _crossing()
    old = {
        "stage": c.stage_id,
        "entry": ENTRY.id,
        "geofence": c.geofence_id,
        "kind": record_kind(c),
        "ordinal": c.ordinal,
        "crossed_at": c.crossed_at_ms,
        "status": "valid",
        "fix_before_at": c.before.ts_ms,
        "fix_after_at": c.after.ts_ms,
        "details": record_details(c),
    }
    row = timing_output(_snapshot(), ENTRY, c).data
    assert _encode(row) == _encode(old)
    assert TIMING_RECORDS.decoder.decode(_encode(old)) == row


def test_a_penalty_is_the_dict_it_was() -> None:
    evidence: dict[str, Any] = {"zone": 4, "zone_name": "Village", "max_kmh": 71.5}
    row = penalty_output(ENTRY, 2, "k", "speeding", 10_000, "71.5 km/h", evidence, 123).data
    old = {
        "stage": 2,
        "entry": ENTRY.id,
        "kind": "speeding",
        "amount_ms": 10_000,
        "reason": "71.5 km/h",
        "status": "valid",
        "details": evidence,
    }
    assert _encode(row) == _encode(old)


def _result(total: int | None = 301_000) -> StageResult:
    return StageResult(
        stage=2,
        entry=ENTRY.id,
        status="finished",
        start_at_ms=1_000,
        finish_at_ms=301_000,
        elapsed_ms=300_000,
        penalty_ms=1_000,
        total_ms=total,
        splits=(Split(7, "split 1", 151_000, 150_000),),
        evidence=Evidence(("a", "b"), ("p",)),
    )


def test_a_result_is_the_dict_it_was_and_keeps_its_ranks_while_its_standing_holds() -> None:
    r = _result()
    fresh = result_output(ENTRY, r, None)
    old: dict[str, Any] = {
        "stage": 2,
        "entry": ENTRY.id,
        "start_at": 1_000,
        "finish_at": 301_000,
        "elapsed_ms": 300_000,
        "penalty_ms": 1_000,
        "total_ms": 301_000,
        "status": "finished",
        "rank": None,
        "class_rank": None,
        "gap_leader_ms": None,
        "gap_ahead_ms": None,
        "splits": [{"geofence": 7, "name": "split 1", "at": 151_000, "elapsed_ms": 150_000}],
        "evidence": {"timing_records": ["a", "b"], "penalties": ["p"]},
    }
    assert _encode(fresh.data) == _encode(old)
    ranked = msgspec.structs.replace(fresh, data=ResultRow.of(r, (2, 1, 500, 500)))
    assert result_output(ENTRY, r, ranked).data.placing == (2, 1, 500, 500)
    assert result_output(ENTRY, _result(302_000), ranked).data.placing == (None,) * 4
    assert STAGE_RESULTS.decoder.decode(_encode(old)) == fresh.data


def test_an_alert_is_the_dict_it_was_and_its_span_again() -> None:
    span = AlertSpan("stopped", 2, 1_000, None, "warning", {"fixes": 61, "max": 1.5}, None)
    row = alert_output(ENTRY, span).data
    old = {
        "event": ENTRY.event,
        "entry": ENTRY.id,
        "stage": 2,
        "kind": "stopped",
        "severity": "warning",
        "started_at": 1_000,
        "ended_at": None,
        "details": {"fixes": 61, "max": 1.5},
        "status": "open",
        "settled_after_ms": None,
    }
    assert _encode(row) == _encode(old)
    assert row.span() == span
    assert ALERTS.decoder.decode(_encode(old)) == row
    assert AlertRow.of(ENTRY.event, ENTRY.id, span) == row


def test_a_gate_an_official_decided_is_superseded() -> None:
    c = _crossing()
    manual = ManualRows(timing_records=({"stage": c.stage_id, "entry": ENTRY.id, "geofence": 1},))
    row: TimingRow = timing_output(_snapshot(manual), ENTRY, c).data
    assert row.status == "superseded"

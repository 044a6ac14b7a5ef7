"""The rows the domain publishes, one type per collection: their fields, in order.

Each automatic output is published as a row of Directus's table of the same name
(`public.timing_records`, `penalties`, `stage_results`, `alerts`) and kept, as JSON,
in `telemetry.domain_outputs.data`. These structs are that JSON: the domain stage
builds them, reads them back by attribute, and encodes them unchanged.

Invariant: a struct's fields, their order and their JSON types are the stored shape —
other code and Directus read it — so adding, renaming or reordering a field is a
schema change (ADR 0002), never a refactoring. Times are epoch milliseconds; nested
evidence (`details`) stays free-form JSON, as each rule writes it.
"""

from __future__ import annotations

from typing import Any

import msgspec

from processor.domain.alerts import AlertKind, AlertSpan, Severity
from processor.domain.results import StageResult


class TimingRow(msgspec.Struct, frozen=True):
    """A crossing of a geofence (`public.timing_records`)."""

    stage: int
    entry: int
    geofence: int
    kind: str  # start_line, split_line, finish_line, waypoint, zone_entry, zone_exit
    ordinal: int
    crossed_at: int
    status: str  # valid, superseded (an official decides the gate)
    fix_before_at: int
    fix_after_at: int
    details: dict[str, Any]

    @property
    def facts(self) -> TimingFacts:
        return TimingFacts(self.geofence, self.kind, self.crossed_at, self.status)


class TimingFacts(msgspec.Struct, frozen=True):
    """What results and active spans read of a timing record (a part of `TimingRow`,
    read without its details)."""

    geofence: int
    kind: str
    crossed_at: int
    status: str


class PenaltyRow(msgspec.Struct, frozen=True):
    """A time penalty (`public.penalties`)."""

    stage: int
    entry: int
    kind: str  # speeding, missed_waypoint
    amount_ms: int
    reason: str
    status: str
    details: dict[str, Any]


class SplitRow(msgspec.Struct, frozen=True):
    geofence: int
    name: str
    at: int
    elapsed_ms: int


class EvidenceRow(msgspec.Struct, frozen=True):
    timing_records: list[str]
    penalties: list[str]


Placing = tuple[int | None, int | None, int | None, int | None]  # rank … gap_ahead_ms


class ResultRow(msgspec.Struct, frozen=True):
    """A stage result with its ranking (`public.stage_results`)."""

    stage: int
    entry: int
    start_at: int | None
    finish_at: int | None
    elapsed_ms: int | None
    penalty_ms: int
    total_ms: int | None
    status: str
    rank: int | None
    class_rank: int | None
    gap_leader_ms: int | None
    gap_ahead_ms: int | None
    splits: list[SplitRow]
    evidence: EvidenceRow

    @classmethod
    def of(cls, r: StageResult, placing: Placing) -> ResultRow:
        rank, class_rank, gap_leader_ms, gap_ahead_ms = placing
        return cls(
            stage=r.stage,
            entry=r.entry,
            start_at=r.start_at_ms,
            finish_at=r.finish_at_ms,
            elapsed_ms=r.elapsed_ms,
            penalty_ms=r.penalty_ms,
            total_ms=r.total_ms,
            status=r.status,
            rank=rank,
            class_rank=class_rank,
            gap_leader_ms=gap_leader_ms,
            gap_ahead_ms=gap_ahead_ms,
            splits=[SplitRow(s.geofence, s.name, s.at_ms, s.elapsed_ms) for s in r.splits],
            evidence=EvidenceRow(list(r.evidence.timing_records), list(r.evidence.penalties)),
        )

    @property
    def standing(self) -> tuple[str, int | None]:
        """What ranking looks at."""
        return (self.status, self.total_ms)

    @property
    def placing(self) -> Placing:
        return (self.rank, self.class_rank, self.gap_leader_ms, self.gap_ahead_ms)


class AlertRow(msgspec.Struct, frozen=True):
    """A safety alert (`public.alerts`); `settled_after_ms` is the domain's own
    (`AlertSpan.may_change_from`), in its record only."""

    event: int
    entry: int
    stage: int | None
    kind: AlertKind
    severity: Severity
    started_at: int
    ended_at: int | None
    details: dict[str, Any]
    status: str  # open, ended (officials: acknowledged, dismissed)
    settled_after_ms: int | None

    @classmethod
    def of(cls, event: int, entry: int, s: AlertSpan) -> AlertRow:
        return cls(
            event=event,
            entry=entry,
            stage=s.stage_id,
            kind=s.kind,
            severity=s.severity,
            started_at=s.started_at_ms,
            ended_at=s.ended_at_ms,
            details=dict(s.details),
            status="open" if s.ended_at_ms is None else "ended",
            settled_after_ms=s.settled_after_ms,
        )

    def span(self) -> AlertSpan:
        return AlertSpan(
            self.kind,
            self.stage,
            self.started_at,
            self.ended_at,
            self.severity,
            self.details,
            self.settled_after_ms,
        )

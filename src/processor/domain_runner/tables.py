"""The collections of automatic outputs: their row types and how each is published.

The published row is the output's `data` (`processor.domain.rows`) restricted to these
columns; `store.apply` writes it. Adding a column here (after adding it to the
snapshot, ADR 0002) is all it takes to publish a value the domain already computes.
`TIMING_FACTS` is the part of a timing record results and active spans read.
"""

from __future__ import annotations

from processor.domain.rows import (
    AlertRow,
    PenaltyRow,
    ResultRow,
    TimingFacts,
    TimingRow,
)
from processor.domain_runner.store import Collection, Published

TIMING_RECORDS = Published(
    "timing_records",
    TimingRow,
    columns={
        "stage": "int",
        "entry": "int",
        "geofence": "int",
        "kind": "text",
        "ordinal": "int",
        "crossed_at": "ts",
        "status": "text",
        "fix_before_at": "ts",
        "fix_after_at": "ts",
        "details": "json",
    },
    identity=("stage", "entry", "geofence", "kind"),
)


TIMING_FACTS = Collection("timing_records", TimingFacts, partial=True)
PENALTIES = Published(
    "penalties",
    PenaltyRow,
    columns={
        "stage": "int",
        "entry": "int",
        "kind": "text",
        "amount_ms": "bigint",
        "reason": "text",
        "status": "text",
        "details": "json",
    },
)
STAGE_RESULTS = Published(
    "stage_results",
    ResultRow,
    columns={
        "stage": "int",
        "entry": "int",
        "start_at": "ts",
        "finish_at": "ts",
        "elapsed_ms": "bigint",
        "penalty_ms": "bigint",
        "total_ms": "bigint",
        "status": "text",
        "rank": "int",
        "class_rank": "int",
        "gap_leader_ms": "bigint",
        "gap_ahead_ms": "bigint",
        "splits": "json",
    },
)
ALERTS = Published(
    "alerts",
    AlertRow,
    columns={
        "event": "int",
        "entry": "int",
        "stage": "int",
        "kind": "text",
        "severity": "text",
        "started_at": "ts",
        "ended_at": "ts",
        "details": "json",
        "status": "text",
    },
    identity=("entry", "kind"),
    # Officials work the status (ADR 0004): acknowledged and dismissed are theirs.
    overrides={
        "status": "CASE WHEN t.status IN ('acknowledged', 'dismissed') THEN t.status"
        " ELSE EXCLUDED.status END"
    },
)

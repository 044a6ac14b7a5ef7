"""How each automatic output is published in Directus's tables (columns and types).

The published row is the output's `data` restricted to these columns; `store.apply`
writes it. Adding a column here (after adding it to the snapshot, ADR 0002) is all it
takes to publish a value the domain already computes.
"""

from __future__ import annotations

from processor.domain_runner.store import Published

TIMING_RECORDS = Published(
    "timing_records",
    {
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
)


PENALTIES = Published(
    "penalties",
    {
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
    {
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
    {
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
    # Officials work the status (ADR 0004): acknowledged and dismissed are theirs.
    overrides={
        "status": "CASE WHEN t.status IN ('acknowledged', 'dismissed') THEN t.status"
        " ELSE EXCLUDED.status END"
    },
)

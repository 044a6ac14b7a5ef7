"""Stored rows read back typed give the outbox the event keys they gave untyped: a
deletion's or a rewrite's key hashes the row as jsonb returns it (keys shorter first,
then bytewise, at every level), which `store.event_key(..., stored=True)` reproduces."""

from __future__ import annotations

import hashlib
from typing import Any

import asyncpg
import msgspec
import pytest

from processor.domain.results import Evidence, Split, StageResult
from processor.domain.rows import ResultRow
from processor.domain_runner.store import Collection, Output, event_key
from processor.domain_runner.tables import ALERTS, PENALTIES, STAGE_RESULTS, TIMING_RECORDS

pytestmark = pytest.mark.integration

ROWS: list[tuple[Collection[Any], Any]] = [
    (
        TIMING_RECORDS,
        {
            "stage": 1,
            "entry": 5,
            "geofence": 3,
            "kind": "split_line",
            "ordinal": 0,
            "crossed_at": 1_777_615_259_123,
            "status": "valid",
            "fix_before_at": 1_777_615_259_000,
            "fix_after_at": 1_777_615_260_000,
            "details": {
                "transition": "cross",
                "direction": "forward",
                "fraction": 0.123457,
                "before": {"ts_ms": 1, "latitude": 54.6, "longitude": 25.2, "speed": 72.5},
                "distance_m": None,
            },
        },
    ),
    (
        PENALTIES,
        {
            "stage": 2,
            "entry": 5,
            "kind": "speeding",
            "amount_ms": 10_000,
            "reason": "12 km/h over",
            "status": "valid",
            "details": {"zone": 4, "zone_name": "Village", "max_speed_kmh": 71.25},
        },
    ),
    (
        STAGE_RESULTS,
        msgspec.to_builtins(
            ResultRow.of(
                StageResult(
                    2,
                    5,
                    "finished",
                    1_000,
                    301_000,
                    300_000,
                    0,
                    300_000,
                    (Split(7, "split 1", 151_000, 150_000),),
                    Evidence(("a", "b"), ()),
                ),
                (1, 1, 0, None),
            )
        ),
    ),
    (
        ALERTS,
        {
            "event": 1,
            "entry": 5,
            "stage": None,
            "kind": "gps_jump",
            "severity": "warning",
            "started_at": 1_000,
            "ended_at": 1_000,
            "details": {"max_speed_kmh": 300.0, "distance_m": 812.5, "dt_ms": 1000},
            "status": "ended",
            "settled_after_ms": 1_000,
        },
    ),
]


@pytest.mark.parametrize(("collection", "data"), ROWS, ids=[c.name for c, _ in ROWS])
async def test_a_stored_rows_event_key_is_the_untyped_ones(
    db: asyncpg.Connection, collection: Collection[Any], data: dict[str, Any]
) -> None:
    stored = await db.fetchval("SELECT $1::jsonb::text", msgspec.json.encode(data).decode())
    untyped = msgspec.json.encode(msgspec.json.decode(stored))  # how the digest was taken
    typed = Output(collection.name, "k", 1, 2, 5, 0, collection.decoder.decode(stored))
    digest = hashlib.blake2b(untyped, digest_size=8).hexdigest()
    for change in ("updated", "deleted"):
        assert event_key(typed, change, stored=True) == f"{collection.name}:k:{change}:{digest}"

"""The outbox's promise, checked against the database: every automatic published row's
last announced event is its state, and every deleted row's last event is `deleted`."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

OUTPUT_TABLES = ("timing_records", "penalties", "stage_results", "alerts")


async def last_events(conn: asyncpg.Connection) -> dict[tuple[str, str], dict[str, Any]]:
    """(collection, row key) → the payload of its newest outbox event."""
    rows = await conn.fetch(
        "SELECT DISTINCT ON (collection, row_key) collection, row_key, id, change, payload::text"
        " FROM telemetry.outbox ORDER BY collection, row_key, id DESC"
    )
    return {
        (r["collection"], r["row_key"]): {**json.loads(r["payload"]), "version": r["id"]}
        for r in rows
    }


async def assert_outbox_matches_rows(
    conn: asyncpg.Connection, tables: tuple[str, ...] = OUTPUT_TABLES
) -> int:
    """Every automatic row of the output tables has a last event equal to it (same
    Directus id, same row); every other announced key ends on `deleted`. The number of
    rows checked."""
    events = await last_events(conn)
    checked = 0
    for table in tables:
        rows = await conn.fetch(
            f"SELECT key, id, to_jsonb(t)::text AS row FROM public.{table} t WHERE source = 'auto'"
        )
        present = set()
        for r in rows:
            present.add(r["key"])
            event = events.get((table, r["key"]))
            assert event is not None, f"{table} {r['key']}: no event"
            assert event["change"] != "deleted", f"{table} {r['key']}: last event deleted"
            assert event["id"] == r["id"], f"{table} {r['key']}: id {event['id']} != {r['id']}"
            assert event["data"] == json.loads(r["row"]), f"{table} {r['key']}: stale event"
            checked += 1
        for (collection, key), event in events.items():
            if collection == table and key not in present:
                assert event["change"] == "deleted", f"{table} {key}: gone, last {event['change']}"
    return checked

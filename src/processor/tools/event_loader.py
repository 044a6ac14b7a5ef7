"""Load an event file (the sample event's shape) into the Directus tables, for demos and
tests on machines without Directus. Rows only: the tables must exist (Directus's schema,
or the SQL fixture). In production organisers edit these rows in Directus Studio."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from processor.storage.pool import DbConnection

# Parents before children (foreign keys); json columns cast explicitly.
TABLES: tuple[tuple[str, tuple[str, ...], frozenset[str]], ...] = (
    (
        "events",
        ("id", "name", "starts_at", "ends_at", "timezone", "status", "rules"),
        frozenset({"rules"}),
    ),
    ("devices", ("id", "imei", "model", "label"), frozenset()),
    (
        "entries",
        ("id", "event", "device", "number", "crew_name", "class", "status"),
        frozenset(),
    ),
    (
        "stages",
        (
            "id",
            "event",
            "name",
            "sequence",
            "opens_at",
            "closes_at",
            "status",
            "max_time_s",
            "route",
        ),
        frozenset({"route"}),
    ),
    (
        "geofences",
        (
            "id",
            "event",
            "stage",
            "kind",
            "name",
            "geometry",
            "direction",
            "radius_m",
            "speed_limit_kmh",
            "sequence",
            "waypoint_type",
        ),
        frozenset({"geometry"}),
    ),
)
_TIME_COLUMNS = frozenset({"starts_at", "ends_at", "opens_at", "closes_at"})


def read_event_file(path: Path | None = None) -> dict[str, Any]:
    if path is None:
        from processor.tools.simulator.event import default_event_path

        path = default_event_path()
    doc: dict[str, Any] = msgspec.json.decode(path.read_bytes())
    return doc


async def load_event_rows(conn: DbConnection, doc: dict[str, Any]) -> dict[str, int]:
    """Upsert every row by id; returns rows per table. Sequences follow the ids."""
    counts: dict[str, int] = {}
    async with conn.transaction():
        for table, columns, json_columns in TABLES:
            rows = doc.get(table, [])
            placeholders = ", ".join(
                f"${i}::text::json"
                if c in json_columns
                else f"${i}::text::timestamptz"  # text: the pool's timestamptz codec takes ms
                if c in _TIME_COLUMNS
                else f"${i}"
                for i, c in enumerate(columns, start=1)
            )
            names = ", ".join(f'"{c}"' for c in columns)
            updates = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in columns if c != "id")
            sql = (
                f"INSERT INTO public.{table} ({names}) VALUES ({placeholders})"
                f" ON CONFLICT (id) DO UPDATE SET {updates}"
            )
            for row in rows:
                await conn.execute(sql, *(_value(row.get(c), c in json_columns) for c in columns))
            if rows:
                await conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('public.{table}', 'id'),"
                    f" (SELECT max(id) FROM public.{table}))"
                )
            counts[table] = len(rows)
    return counts


def _value(value: Any, is_json: bool) -> Any:
    if is_json and value is not None:
        return msgspec.json.encode(value).decode()
    return value

"""Reading a device's fixes for a time range, plus the fix just before and just after it.

The neighbours let the domain re-cut the segments that cross the range's edges, so a
late record changes exactly the segments it falls into.

Every query names the devices it reads (`device_id = …`), so on Citus each runs on the
shards that hold them; each is in a form Citus pushes down as it is (no correlated
subquery beside a set-returning function) and plain PostgreSQL plans as index range
scans per device.
"""

from __future__ import annotations

from typing import Any

import msgspec

from processor.core.position import Position
from processor.storage.pool import DbConnection

_WITHOUT_IO = (
    "device_id, (extract(epoch FROM ts) * 1000)::bigint AS ts_ms, "
    "(extract(epoch FROM received_at) * 1000)::bigint AS received_ms, latitude, longitude, "
    "altitude, heading, speed, satellites, priority, event_io_id, codec, fix_valid, stream_id"
)
_COLUMNS = f"{_WITHOUT_IO}, io::text AS io"
_RANGE_SQL = f"""
(SELECT {_COLUMNS} FROM telemetry.positions
  WHERE device_id = $1 AND ts < to_timestamp($2 / 1000.0) AND fix_valid
  ORDER BY ts DESC LIMIT 1)
UNION ALL
(SELECT {_COLUMNS} FROM telemetry.positions
  WHERE device_id = $1 AND ts >= to_timestamp($2 / 1000.0) AND ts <= to_timestamp($3 / 1000.0)
  ORDER BY ts)
UNION ALL
(SELECT {_COLUMNS} FROM telemetry.positions
  WHERE device_id = $1 AND ts > to_timestamp($3 / 1000.0) AND fix_valid
  ORDER BY ts LIMIT 1)
"""
_decode_io = msgspec.json.Decoder(dict[str, Any]).decode


_MANY_SQL = f"""
SELECT p.* FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[]) AS w(d, s, e, i)
CROSS JOIN LATERAL (
    SELECT {_WITHOUT_IO}, CASE WHEN ts >= to_timestamp(w.i / 1000.0) THEN io::text END AS io
    FROM telemetry.positions
    WHERE device_id = w.d AND ts >= to_timestamp(w.s / 1000.0) AND ts <= to_timestamp(w.e / 1000.0)
    ORDER BY ts
) AS p
"""
# A lateral subquery grouped by the device, not a correlated subquery in the select list:
# Citus pushes this form down to each device's shard (it refuses a correlated subquery
# beside a set-returning function), and plain PostgreSQL plans both alike — one index
# range scan per device. A device with nothing later has no row.
_LATER_SQL = """
SELECT w.d, later.received_ms
FROM unnest($1::text[], $2::bigint[]) AS w(d, e)
CROSS JOIN LATERAL (
    SELECT device_id, (extract(epoch FROM min(received_at)) * 1000)::bigint AS received_ms
    FROM telemetry.positions
    WHERE device_id = w.d AND ts > to_timestamp(w.e / 1000.0)
    GROUP BY device_id
) AS later
"""


async def read_many(
    conn: DbConnection, spans: dict[str, tuple[int, int]], io_from: dict[str, int] | None = None
) -> dict[str, list[Position]]:
    """Each device's records with start <= ts <= end, in one query (the domain stage's
    fast path reads ~25 s of thousands of devices per batch).

    `io_from` (device → ms): records before it come with an empty `io` — their geometry
    is what is wanted, and decoding every IO element of 25 s of records per device is
    most of the cost of a read."""
    devices = sorted(spans)
    io_from = io_from or {}
    rows = await conn.fetch(
        _MANY_SQL,
        devices,
        [spans[d][0] for d in devices],
        [spans[d][1] for d in devices],
        [io_from.get(d, spans[d][0]) for d in devices],
    )
    found: dict[str, list[Position]] = {d: [] for d in devices}
    for p in _positions(rows):
        found[p.device_id].append(p)
    for fixes in found.values():
        fixes.sort(key=lambda p: p.ts_ms)
    return found


async def first_received_after(conn: DbConnection, ends: dict[str, int]) -> dict[str, int | None]:
    """Per device, when the earliest-received of its records later than `end` arrived
    (None: nothing later is stored): tells whether a window re-cuts history without
    reading what came after it."""
    devices = sorted(ends)
    rows = await conn.fetch(_LATER_SQL, devices, [ends[d] for d in devices])
    found: dict[str, int | None] = dict.fromkeys(devices)
    found.update((r["d"], r["received_ms"]) for r in rows)
    return found


async def read_range(
    conn: DbConnection, device_id: str, start_ms: int, end_ms: int
) -> list[Position]:
    """Fixes with start <= ts <= end in time order, with the valid fix before and after.

    `io` comes back as stored: integers, byte strings as hex text.
    """
    rows = await conn.fetch(_RANGE_SQL, device_id, start_ms, end_ms)
    fixes = _positions(rows)
    fixes.sort(key=lambda p: p.ts_ms)
    return fixes


def _positions(rows: list[Any]) -> list[Position]:
    return [
        Position(
            device_id=r["device_id"],
            ts_ms=r["ts_ms"],
            received_at_ms=r["received_ms"],
            latitude=r["latitude"],
            longitude=r["longitude"],
            fix_valid=r["fix_valid"],
            stream_id=r["stream_id"],
            priority=r["priority"],
            codec=r["codec"],
            altitude=r["altitude"],
            heading=r["heading"],
            speed=r["speed"],
            satellites=r["satellites"],
            event_io_id=r["event_io_id"],
            io={} if r["io"] is None else _decode_io(r["io"]),
        )
        for r in rows
    ]

"""A `Position` as the column tuple of `telemetry.positions`."""

from __future__ import annotations

import msgspec

from processor.core.position import Position

COLUMNS = (
    "device_id",
    "ts",
    "received_at",
    "latitude",
    "longitude",
    "altitude",
    "heading",
    "speed",
    "satellites",
    "priority",
    "event_io_id",
    "codec",
    "fix_valid",
    "io",
    "stream_id",
)
SQL_TYPES = (
    "text",
    "timestamptz",
    "timestamptz",
    "float8",
    "float8",
    "float4",
    "float4",
    "float4",
    "int2",
    "int2",
    "int4",
    "text",
    "bool",
    "jsonb",
    "text",
)

# Times as epoch milliseconds: the pool's timestamptz codec encodes them (storage.pool).
Row = tuple[
    str,
    int,
    int,
    float,
    float,
    float | None,
    float | None,
    float | None,
    int | None,
    int,
    int | None,
    str | None,
    bool,
    str,
    str,
]
_encode = msgspec.json.encode


def io_json(io: dict[str, int | bytes]) -> str:
    """IO as JSON text: integers exact (any size), byte strings as lowercase hex."""
    if not io:
        return "{}"
    for value in io.values():
        if type(value) is bytes:
            hexed = {k: (v.hex() if type(v) is bytes else v) for k, v in io.items()}
            return _encode(hexed).decode()
    return _encode(io).decode()


def to_row(p: Position) -> Row:
    return (
        p.device_id,
        p.ts_ms,
        p.received_at_ms,
        p.latitude,
        p.longitude,
        p.altitude,
        p.heading,
        p.speed,
        p.satellites,
        p.priority,
        p.event_io_id,
        p.codec,
        p.fix_valid,
        io_json(p.io),
        p.stream_id,
    )

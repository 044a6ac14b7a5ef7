"""Contract-v1 entries for tests: valid ones by (device, time), and a few bad ones."""

from __future__ import annotations

from typing import Any

import msgspec
import redis.asyncio as aioredis

from processor.core.timeparse import format_ms

BASE_MS = 1_777_629_600_000  # 2026-05-01T10:00:00Z


def payload(device_id: str, ts_ms: int, **overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "device_id": device_id,
        "timestamp": format_ms(ts_ms),
        "received_at": format_ms(ts_ms + 400),
        "codec": "8E",
        "priority": 0,
        "latitude": 54.6 + (ts_ms % 100_000) / 1e7,
        "longitude": 25.2,
        "altitude": 120,
        "angle": 90,
        "satellites": 11,
        "speed": 60,
        "event_io_id": 0,
        "io": {"239": 1, "11": {"__bigint": "8944100000000000000"}, "385": {"__buffer": "AQID"}},
    }
    doc.update(overrides)
    return doc


def entry(device_id: str, ts_ms: int, **overrides: Any) -> dict[bytes, bytes]:
    return {b"v": b"1", b"payload": msgspec.json.encode(payload(device_id, ts_ms, **overrides))}


def bad_entry(kind: str) -> dict[bytes, bytes]:
    if kind == "version":
        return {b"v": b"2", b"payload": b"{}"}
    if kind == "json":
        return {b"v": b"1", b"payload": b"{not json"}
    if kind == "missing":
        return {b"v": b"1", b"payload": b'{"device_id": "X1"}'}
    raise ValueError(kind)


async def read_stream(client: aioredis.Redis, key: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """XRANGE with the types redis-py's stubs do not express."""
    found: Any = await client.xrange(key)
    return [(entry_id, dict(fields)) for entry_id, fields in found]


async def execute(client: aioredis.Redis, *args: object) -> Any:
    """A raw command (XCLAIM ... RETRYCOUNT) that redis-py has no typed method for."""
    return await client.execute_command(*args)  # type: ignore[no-untyped-call]

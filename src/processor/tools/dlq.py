"""Inspect dead letters and put them back on the stream once the cause is fixed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

DLQ_META_FIELDS = (b"reason", b"detail", b"source_id", b"deliveries", b"consumer", b"failed_at")


@dataclass(frozen=True)
class DeadLetterView:
    id: str
    reason: str
    detail: str
    source_id: str
    deliveries: int
    consumer: str
    failed_at_ms: int
    original: dict[bytes, bytes]


def _view(entry_id: bytes | str, fields: dict[bytes, bytes]) -> DeadLetterView:
    def text(key: bytes) -> str:
        return fields.get(key, b"").decode("utf-8", "replace")

    return DeadLetterView(
        id=entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
        reason=text(b"reason"),
        detail=text(b"detail"),
        source_id=text(b"source_id"),
        deliveries=int(fields.get(b"deliveries") or 0),
        consumer=text(b"consumer"),
        failed_at_ms=int(fields.get(b"failed_at") or 0),
        original={k: v for k, v in fields.items() if k not in DLQ_META_FIELDS},
    )


async def list_dead_letters(
    redis: aioredis.Redis, dlq: str, *, count: int = 50, reason: str | None = None
) -> list[DeadLetterView]:
    """Newest first, optionally only one reason."""
    found: list[DeadLetterView] = []
    cursor = "+"
    while len(found) < count:
        batch: Any = await redis.xrevrange(dlq, max=cursor, min="-", count=max(count, 100))
        if not batch:
            break
        for entry_id, fields in batch:
            view = _view(entry_id, fields)
            if reason is None or view.reason == reason:
                found.append(view)
        last = batch[-1][0].decode()
        cursor = "(" + last
        if len(batch) < max(count, 100):
            break
    return found[:count]


async def show_dead_letter(redis: aioredis.Redis, dlq: str, entry_id: str) -> DeadLetterView | None:
    batch: Any = await redis.xrange(dlq, min=entry_id, max=entry_id)
    return _view(batch[0][0], batch[0][1]) if batch else None


async def reasons(redis: aioredis.Redis, dlq: str, *, scan_limit: int = 100_000) -> dict[str, int]:
    """Dead letters by reason (scanning at most `scan_limit`, newest first)."""
    counts: dict[str, int] = {}
    for view in await list_dead_letters(redis, dlq, count=scan_limit):
        counts[view.reason] = counts.get(view.reason, 0) + 1
    return counts


async def requeue(
    redis: aioredis.Redis,
    dlq: str,
    stream: str,
    ids: Sequence[str] | None = None,
    *,
    reason: str | None = None,
    limit: int = 10_000,
) -> int:
    """Re-add the original fields to the stream and delete the dead letters, atomically each."""
    if ids:
        views = [v for i in ids if (v := await show_dead_letter(redis, dlq, i)) is not None]
    else:
        views = await list_dead_letters(redis, dlq, count=limit, reason=reason)
    moved = 0
    for view in reversed(views):  # oldest first, as they originally arrived
        if not view.original:
            continue
        pipe = redis.pipeline(transaction=True)
        pipe.xadd(stream, dict(view.original))  # type: ignore[arg-type]
        pipe.xdel(dlq, view.id)
        await pipe.execute()
        moved += 1
    return moved

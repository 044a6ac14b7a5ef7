"""The Redis side of the pipeline: every stream command the processor issues lives here.

Entry IDs are `str` (they end up in `positions.stream_id`); field names and values stay
`bytes`, which is what the decoder reads.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import ResponseError

from processor.core.position import Rejection
from processor.core.settings import Settings

log = structlog.get_logger(__name__)

Fields = dict[bytes, bytes]
Entry = tuple[str, Fields | None]  # fields None: the entry was trimmed from the stream


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected entry with everything an operator needs to fix and requeue it."""

    rejection: Rejection
    fields: Mapping[bytes, bytes]
    deliveries: int


def is_nogroup(exc: BaseException) -> bool:
    return isinstance(exc, ResponseError) and str(exc).startswith("NOGROUP")


def connect(settings: Settings) -> aioredis.Redis:
    """A client whose socket timeout outlasts the blocking read."""
    return aioredis.Redis.from_url(
        settings.redis_url.get_secret_value(),
        decode_responses=False,
        socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=5,
        health_check_interval=30,
        client_name=f"processor:{settings.consumer}"[:64].replace(" ", "_"),
    )


class StreamClient:
    """One consumer in one group of one stream."""

    def __init__(self, redis: aioredis.Redis, settings: Settings) -> None:
        install_raw_reply(redis)
        self.redis = redis
        self.stream = settings.stream
        self.group = settings.group
        self.consumer = settings.consumer
        self.dlq_stream = settings.dlq_stream
        self.dlq_maxlen = settings.dlq_maxlen
        self.notice_stream = settings.notice_stream if settings.notices_enabled else None
        self.notice_maxlen = settings.notice_maxlen

    async def ensure_group(self) -> bool:
        """Create the group (and stream) from ID 0 if missing; True if it was created."""
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" in str(exc):
                return False
            raise
        return True

    async def read(self, start: str, count: int, block_ms: int | None) -> list[Entry]:
        """`>` for new entries, an ID to re-read this consumer's own pending entries."""
        args: list[Any] = ["XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", count]
        if block_ms is not None:
            args += ["BLOCK", block_ms]
        args += ["STREAMS", self.stream, start]
        # Raw reply (no redis-py callback): the field lists are turned into dicts here,
        # once, which is the hot path's largest Redis-side cost otherwise.
        reply: Any = await self.redis.execute_command(*args, **{_RAW: True})  # type: ignore[no-untyped-call]
        if not reply:
            return []
        # RESP3 (redis-py's default from 8.0) replies with a map, RESP2 with a list.
        per_stream = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
        return _raw_entries(per_stream)

    async def autoclaim(
        self, min_idle_ms: int, cursor: str, count: int
    ) -> tuple[str, list[Entry], int]:
        """One XAUTOCLAIM step: (next cursor, claimed entries, IDs found deleted)."""
        reply: Any = await self.redis.execute_command(  # type: ignore[no-untyped-call]
            "XAUTOCLAIM",
            self.stream,
            self.group,
            self.consumer,
            min_idle_ms,
            cursor,
            "COUNT",
            count,
        )
        next_cursor = _text(reply[0])
        entries = _entries(reply[1])
        deleted = len(reply[2]) if len(reply) > 2 else 0
        return next_cursor, entries, deleted

    async def autoclaim_ids(
        self, min_idle_ms: int, cursor: str, count: int
    ) -> tuple[str, list[str], int]:
        """XAUTOCLAIM ... JUSTID: take idle entries without counting a delivery.

        The caller then `claim()`s the ones it does not already hold, which counts the
        delivery; re-taking entries it holds in flight must not (they were not redelivered,
        and the poison-entry guard would otherwise count every claim round of a stall).
        """
        reply: Any = await self.redis.execute_command(  # type: ignore[no-untyped-call]
            "XAUTOCLAIM",
            self.stream,
            self.group,
            self.consumer,
            min_idle_ms,
            cursor,
            "COUNT",
            count,
            "JUSTID",
            **{_RAW: True},
        )
        deleted = len(reply[2]) if len(reply) > 2 else 0
        return _text(reply[0]), [_text(i) for i in reply[1]], deleted

    async def claim(self, ids: Sequence[str]) -> list[Entry]:
        """XCLAIM entries this consumer already owns: their fields, one delivery counted."""
        if not ids:
            return []
        reply: Any = await self.redis.execute_command(  # type: ignore[no-untyped-call]
            "XCLAIM", self.stream, self.group, self.consumer, 0, *ids
        )
        return _entries(reply)

    async def delivery_counts(self, ids: Sequence[str]) -> dict[str, int]:
        """Delivery counts of entries this consumer holds (one XPENDING over their ID range)."""
        if not ids:
            return {}
        low = min(ids, key=_id_key)
        high = max(ids, key=_id_key)
        rows: Any = await self.redis.xpending_range(
            self.stream,
            self.group,
            min=low,
            max=high,
            count=len(ids) * 4 + 100,
            consumername=self.consumer,
        )
        wanted = set(ids)
        counts: dict[str, int] = {}
        for row in rows:
            entry_id = _text(row["message_id"])
            if entry_id in wanted:
                counts[entry_id] = int(row["times_delivered"])
        return counts

    async def group_pending(self) -> int:
        """Entries delivered to any consumer of the group and not yet acknowledged."""
        summary: Any = await self.redis.xpending(self.stream, self.group)
        return int(summary["pending"])

    async def pending_of_mine(self, ids: Sequence[str]) -> set[str]:
        """Which of these IDs are still pending for this consumer (after an unclear EXEC)."""
        return set((await self.delivery_counts(ids)).keys())

    async def finish(
        self,
        ack_ids: Sequence[str],
        dead_letters: Iterable[DeadLetter],
        notice: bytes | None,
    ) -> None:
        """Dead letters, the committed notice and the XACK in one MULTI/EXEC: all or nothing."""
        pipe = self.redis.pipeline(transaction=True)
        now = str(int(time.time() * 1000)).encode()
        for letter in dead_letters:
            fields: dict[Any, Any] = dict(letter.fields)
            fields.update(
                {
                    b"reason": letter.rejection.reason.value.encode(),
                    b"detail": letter.rejection.detail.encode(),
                    b"source_id": letter.rejection.stream_id.encode(),
                    b"deliveries": str(letter.deliveries).encode(),
                    b"consumer": self.consumer.encode(),
                    b"failed_at": now,
                }
            )
            pipe.xadd(self.dlq_stream, fields, maxlen=self.dlq_maxlen, approximate=True)
        if notice is not None and self.notice_stream is not None:
            pipe.xadd(
                self.notice_stream,
                {b"v": b"1", b"windows": notice},
                maxlen=self.notice_maxlen,
                approximate=True,
            )
        if ack_ids:
            pipe.xack(self.stream, self.group, *ack_ids)
        await pipe.execute()

    async def ack(self, ids: Sequence[str]) -> None:
        if ids:
            await self.redis.xack(self.stream, self.group, *ids)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


_RAW = "processor_raw_reply"


def install_raw_reply(redis: aioredis.Redis) -> None:
    """XREADGROUP and XAUTOCLAIM replies pass through untouched when asked for (see
    `StreamClient.read`; redis-py cannot parse an XAUTOCLAIM ... JUSTID reply with its cursor)."""
    for command in ("XREADGROUP", "XAUTOCLAIM"):
        _raw_when_asked(redis, command)


def _raw_when_asked(redis: aioredis.Redis, command: str) -> None:
    default = redis.response_callbacks.get(command)

    def callback(response: Any, **options: Any) -> Any:
        if options.get(_RAW):
            return response
        return default(response, **options) if default else response

    redis.set_response_callback(command, callback)


def _raw_entries(raw: Iterable[Any]) -> list[Entry]:
    out: list[Entry] = []
    append = out.append
    for entry_id, flat in raw:
        if not flat:
            append((entry_id.decode(), None))
        elif len(flat) == 4:
            append((entry_id.decode(), {flat[0]: flat[1], flat[2]: flat[3]}))
        else:
            it = iter(flat)
            append((entry_id.decode(), dict(zip(it, it, strict=False))))
    return out


def _entries(raw: Iterable[Any]) -> list[Entry]:
    out: list[Entry] = []
    for item in raw:
        entry_id, fields = item
        out.append((_text(entry_id), fields if fields else None))
    return out

"""The gateway's two Redis readers: the input stream (positions) and the live stream
(the dispatcher's deliveries).

Both are plain XREADs from `$` (the newest entry at start), with no consumer group: a
gateway is a fan-out reader, it never acknowledges, claims or holds back anything of
the core's, and any number of gateways can read the same streams. A reconnect after a
Redis error continues from the last id read, so a short outage loses nothing that is
still in the stream; the live stream's ids are also what clients resume from.

Invariant: the readers never write to Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import cast

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from processor.core.backoff import Backoff
from processor.core.contract import DecodeOptions, decode_entry
from processor.core.position import Position
from processor.gateway.hub import Hub, change_of
from processor.gateway.metrics import GatewayMetrics

log = structlog.get_logger(__name__)
_Reply = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes] | None]]]]
READ_COUNT = 2_000
BLOCK_MS = 1_000


class Feeds:
    """The readers, and when they last made progress (for `/readyz`)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        hub: Hub,
        metrics: GatewayMetrics,
        *,
        positions_stream: str,
        live_stream: str,
    ) -> None:
        self.redis = redis
        self.hub = hub
        self.metrics = metrics
        self.positions_stream = positions_stream
        self.live_stream = live_stream
        self.running = False
        self.last_progress = time.monotonic()
        self.options = DecodeOptions()

    async def run(self) -> None:
        self.running = True
        try:
            await asyncio.gather(
                self._read(self.positions_stream, "positions", self._position),
                self._read(self.live_stream, "live", self._change),
            )
        finally:
            self.running = False

    def _position(self, entry_id: str, fields: dict[bytes, bytes]) -> None:
        decoded = decode_entry(entry_id, fields, self.options)
        if isinstance(decoded, Position):
            self.hub.on_fix(decoded)

    def _change(self, entry_id: str, fields: dict[bytes, bytes]) -> None:
        change = change_of(entry_id, fields)
        if change is not None:
            self.hub.on_change(change)

    async def _read(
        self, stream: str, feed: str, handle: Callable[[str, dict[bytes, bytes]], None]
    ) -> None:
        last: str | None = None  # the newest entry at start, then the last read
        backoff = Backoff(0.1, 5.0)
        counter = self.metrics.feed_entries.labels(feed)
        while True:
            try:
                if last is None:
                    last = await self._newest(stream)
                reply = cast(
                    _Reply, await self.redis.xread({stream: last}, count=READ_COUNT, block=BLOCK_MS)
                )
            except (RedisError, OSError) as exc:
                delay = backoff.next_delay()
                log.warning("gateway_feed_error", feed=feed, error=str(exc)[:200], retry_in_s=delay)
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            self.last_progress = time.monotonic()
            for _, entries in reply or []:
                for raw_id, fields in entries:
                    entry_id = raw_id.decode()
                    last = entry_id
                    counter.inc()
                    handle(entry_id, fields or {})

    async def _newest(self, stream: str) -> str:
        """The id to read after: the stream's newest entry (not `$` on every call, which
        would skip what arrives between two reads)."""
        newest = await self.redis.xrevrange(stream, count=1)
        if not newest:
            return "0-0"
        raw = newest[0][0]
        return raw.decode() if isinstance(raw, bytes) else str(raw)

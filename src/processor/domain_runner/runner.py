"""The domain stage's loop: notices → per-device windows → handler, acknowledged after.

At-least-once: a notice is acknowledged only when every window it names was handled
and committed; handlers are idempotent (deterministic keys, upserts), so a replay
converges. Work on one device is serialized across instances by a transaction-scoped
PostgreSQL advisory lock. A notice that keeps failing goes to the notice stream's
dead letters after `max_deliveries`, so one bad device cannot stall the stage forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol, runtime_checkable

import asyncpg
import structlog
from redis.exceptions import RedisError

from processor.core.backoff import Backoff
from processor.core.position import Reason, Rejection
from processor.core.settings import Settings
from processor.domain_runner.locks import lock_device, lock_devices
from processor.domain_runner.notices import NoticeError, Window, merge_windows, parse_notice
from processor.observability.metrics import Metrics
from processor.storage.pool import DbConnection
from processor.stream.client import DeadLetter, Entry, StreamClient, is_nogroup

log = structlog.get_logger(__name__)


class WindowHandler(Protocol):
    """Recompute one device's outputs for a window of changed fixes, inside the caller's
    transaction (which holds the device's advisory lock). It reads what it needs."""

    async def __call__(self, conn: DbConnection, window: Window) -> None: ...


@runtime_checkable
class TickingHandler(WindowHandler, Protocol):
    """A handler with work the clock decides (`processor.app` runs it every tick)."""

    async def tick(self, conn: DbConnection) -> None: ...


@runtime_checkable
class PrefilteringHandler(WindowHandler, Protocol):
    """A handler that settles the common case of a whole batch of windows at once and
    returns the windows still to handle one by one."""

    async def prefilter(self, conn: DbConnection, windows: list[Window]) -> list[Window]: ...


def notice_settings(settings: Settings) -> Settings:
    """The same settings, pointed at the notice stream and the domain's group."""
    return settings.model_copy(
        update={
            "stream": settings.notice_stream,
            "group": settings.domain_group,
            "dlq_stream": f"{settings.notice_stream}:dlq",
            "notices_enabled": False,
        }
    )


class DomainRunner:
    """Consumes committed notices and calls the handler per device window."""

    def __init__(
        self,
        settings: Settings,
        stream: StreamClient,
        pool: asyncpg.Pool,
        handler: WindowHandler,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.stream = stream
        self.pool = pool
        self.handler = handler
        self.metrics = metrics
        self._stop = asyncio.Event()
        self._backoff = Backoff(settings.retry_initial_ms / 1000, settings.retry_max_ms / 1000)
        self.last_progress = time.monotonic()
        self.running = False
        self._claimed_at = time.monotonic()

    def stop(self) -> None:
        self._stop.set()

    async def run(self, *, until_idle: bool = False) -> None:
        self.running = True
        try:
            await self._ensure_group()
            cursor = "0"  # this consumer's own pending notices first
            while not self._stop.is_set():
                try:
                    entries = await self.stream.read(
                        cursor, self.settings.domain_read_count, self.settings.block_ms
                    )
                except RedisError as exc:
                    if is_nogroup(exc):
                        await self._ensure_group()
                    else:
                        await self._pause("read", exc)
                    continue
                self.last_progress = time.monotonic()
                if not entries:
                    if cursor != ">":
                        cursor = ">"
                        continue
                    if until_idle:
                        return
                    await self._claim()
                    continue
                if cursor != ">":
                    cursor = entries[-1][0]
                started = time.monotonic()
                await self._handle(entries, pending=cursor != ">")
                if not until_idle and len(entries) < self.settings.domain_read_count:
                    # Caught up: let notices accumulate for a moment. The work is per
                    # device window, so a batch covering more time costs little more
                    # than a short one (PROCESSOR_DOMAIN_BATCH_INTERVAL_S).
                    rest = self.settings.domain_batch_interval_s - (time.monotonic() - started)
                    if rest > 0:
                        await self._sleep(rest)
                if not until_idle and self._claim_due():
                    # Under steady traffic a read is never empty: without this, notices
                    # that failed would wait for the stream to go quiet to be retried.
                    await self._claim()
        finally:
            self.running = False

    async def _ensure_group(self) -> None:
        while not self._stop.is_set():
            try:
                await self.stream.ensure_group()
                return
            except RedisError as exc:
                await self._pause("ensure_group", exc)

    def _claim_due(self) -> bool:
        return time.monotonic() - self._claimed_at >= self.settings.claim_interval_ms / 1000

    async def _claim(self) -> None:
        self._claimed_at = time.monotonic()
        try:
            _, entries, _ = await self.stream.autoclaim(
                self.settings.claim_idle_ms, "0-0", self.settings.domain_read_count
            )
        except RedisError as exc:
            await self._pause("xautoclaim", exc)
            return
        if entries:
            await self._handle(entries, pending=True)

    async def _handle(self, entries: list[Entry], *, pending: bool) -> None:
        counts: dict[str, int] = {}
        if pending:
            try:
                counts = await self.stream.delivery_counts([e[0] for e in entries])
            except RedisError as exc:
                await self._pause("xpending", exc)
                return
        windows: list[Window] = []
        ack: list[str] = []
        letters: list[DeadLetter] = []
        for entry_id, fields in entries:
            deliveries = counts.get(entry_id, 1)
            if fields is None:
                ack.append(entry_id)
                continue
            if deliveries > self.settings.max_deliveries:
                rejection = Rejection(Reason.MAX_DELIVERIES, "notice kept failing", entry_id)
                letters.append(DeadLetter(rejection, fields, deliveries))
                ack.append(entry_id)
                continue
            try:
                windows.extend(parse_notice(fields))
            except NoticeError as exc:
                letters.append(
                    DeadLetter(Rejection(Reason.MALFORMED_JSON, str(exc), entry_id), fields, 1)
                )
            ack.append(entry_id)
        merged = merge_windows(windows)
        try:
            await self._process(merged)
        except Exception as exc:
            # Not acknowledged: the notices are re-read (own pending) or claimed later.
            self.metrics.domain_failures.inc()
            log.error("domain_window_failed", error=f"{type(exc).__name__}: {exc}"[:500])
            await self._sleep(self._backoff.next_delay())
            return
        self._backoff.reset()
        try:
            await self.stream.finish(ack, letters, None)
        except RedisError as exc:
            await self._pause("ack", exc)
            return
        self.metrics.domain_notices.inc(len(ack))
        self.metrics.domain_windows.inc(len(merged))

    async def _prefilter(self, windows: list[Window]) -> list[Window]:
        """The handler's batch fast path, if it has one, under every device's lock
        (taken in device order, one statement: two instances batching overlapping
        notices queue up instead of deadlocking)."""
        handler = self.handler
        if not isinstance(handler, PrefilteringHandler) or not windows:
            return windows
        # In `domain_concurrency` parts on as many connections, so one part's database
        # waits overlap another's Python work; the parts' devices are disjoint.
        ordered = sorted(windows, key=lambda w: w.device_id)
        parts = [
            ordered[i :: self.settings.domain_concurrency]
            for i in range(self.settings.domain_concurrency)
        ]

        async def part(mine: list[Window]) -> list[Window]:
            async with self.pool.acquire() as conn, conn.transaction():
                await lock_devices(conn, (w.device_id for w in mine))
                return await handler.prefilter(conn, mine)

        done = await asyncio.gather(*(part(p) for p in parts if p))
        remaining = [w for found in done for w in found]
        self.metrics.domain_fast_windows.inc(len(windows) - len(remaining))
        return remaining

    async def _process(self, windows: list[Window]) -> None:
        """`domain_concurrency` workers take the windows in turn; after a failure they take
        no more. The batch is retried as a whole anyway, and running its remaining
        windows into the same failure (a missing table, a lost privilege) would only load
        the database the core shares — thousands of doomed transactions per retry."""
        windows = await self._prefilter(windows)
        queue = iter(windows)
        errors: list[Exception] = []

        async def worker() -> None:
            for window in queue:  # shared: each window is taken by one worker
                if errors:
                    return
                started = time.perf_counter()
                try:
                    async with self.pool.acquire() as conn, conn.transaction():
                        await lock_device(conn, window.device_id)
                        await self.handler(conn, window)
                except Exception as exc:
                    errors.append(exc)
                    return
                self.metrics.domain_window_duration.observe(time.perf_counter() - started)

        workers = min(self.settings.domain_concurrency, len(windows))
        await asyncio.gather(*(worker() for _ in range(workers)))
        if errors:
            raise errors[0]

    async def _pause(self, operation: str, exc: BaseException) -> None:
        self.metrics.redis_errors.labels(f"domain_{operation}").inc()
        delay = self._backoff.next_delay()
        log.warning(
            "domain_redis_error", operation=operation, error=str(exc), retry_in_s=round(delay, 3)
        )
        await self._sleep(delay)

    async def _sleep(self, delay: float) -> None:
        """A backoff pause that ends early on `stop()`: a stage failing on every batch
        sleeps up to `retry_max_ms` at a time, and SIGTERM must not wait that out."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay)

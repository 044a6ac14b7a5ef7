"""The domain stage's loop: notices → per-device windows → handler, acknowledged after.

At-least-once: a notice is acknowledged only when every window it names was handled
and committed; handlers are idempotent (deterministic keys, upserts), so a replay
converges. Work on one device is serialized across instances by a transaction-scoped
PostgreSQL advisory lock. A notice that keeps failing goes to the notice stream's
dead letters after `max_deliveries`, so one bad device cannot stall the stage forever.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Protocol, runtime_checkable

import asyncpg
import structlog
from redis.exceptions import RedisError

from processor.core.backoff import Backoff
from processor.core.position import Reason, Rejection
from processor.core.retry import RetryPolicy, retrying
from processor.core.settings import Settings
from processor.domain_runner.locks import lock_device, lock_devices
from processor.domain_runner.notices import NoticeError, Window, merge_windows, parse_notice
from processor.observability.metrics import Metrics
from processor.storage.errors import ErrorClass, classify
from processor.storage.pool import DbConnection
from processor.stream.client import DeadLetter, Entry, StreamClient
from processor.stream.consumer import GroupConsumer, Source

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


def transient(exc: BaseException) -> str | None:
    """A database error another try can cure, by class (a deadlock or a serialization
    failure still possible against officials' edits, a lost connection, a timeout, a
    server in recovery); None for the others (a bug, a missing table)."""
    kind = classify(exc)
    if kind is ErrorClass.CONFLICT:
        state = getattr(exc, "sqlstate", "")
        return {"40P01": "deadlock", "40001": "serialization"}.get(state, "lock_not_available")
    if kind in (ErrorClass.CONNECTION, ErrorClass.TIMEOUT, ErrorClass.UNAVAILABLE):
        return kind.value
    return None


class DomainRunner:
    """Consumes committed notices and calls the handler per device window.

    Reading is the shared consumer engine's (`GroupConsumer`). Each transaction's
    transient database errors (a deadlock, a lost connection) are retried in place
    (`PROCESSOR_DOMAIN_RETRY_ATTEMPTS`, counted in `processor_domain_retries_total`); a
    batch that still fails is tried again as a whole after a backoff, its notices left
    unacknowledged meanwhile, until it succeeds or the runner stops — a failing stage
    pauses, it never drops work. Notices redelivered after a crash carry their delivery
    count: past `max_deliveries` they go to the notice stream's dead letters (a notice
    that kills the process must not kill every restart). `until_idle` ends only when
    the domain group has no pending notice left, whoever held it, or when a batch failed
    `max_deliveries` times in a row (`left_pending`: there is no "later" in one pass).
    """

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
        self.consumer = GroupConsumer(
            stream,
            settings,
            metrics,
            read_count=settings.domain_read_count,
            operation_prefix="domain_",
        )
        self._backoff = Backoff(settings.retry_initial_ms / 1000, settings.retry_max_ms / 1000)
        self._one_batch = asyncio.Lock()  # reads and claims take turns: one batch at a time
        self.running = False
        self.dead_lettered = 0  # notices given up on in this run (after max_deliveries)
        # --until-idle: notices still failing after max_deliveries attempts in a row are
        # left pending and the run ends (there is no "later" in a one-off pass).
        self.left_pending = 0
        self.last_error: str | None = None
        self._until_idle = False
        self._retry = RetryPolicy(
            initial_s=settings.retry_initial_ms / 1000,
            max_s=settings.retry_max_ms / 1000,
            attempts=settings.domain_retry_attempts,
        )

    @property
    def last_progress(self) -> float:
        return self.consumer.last_progress

    def stop(self) -> None:
        self.consumer.stop()

    async def run(self, *, until_idle: bool = False) -> None:
        self.running = True
        self._until_idle = until_idle
        try:
            await self.consumer.run(self._ingest, until_idle=until_idle)
        finally:
            self.running = False

    async def _ingest(
        self, entries: list[Entry], source: Source, deliveries: dict[str, int] | None
    ) -> None:
        started = time.monotonic()
        async with self._one_batch:
            await self._handle(entries, deliveries or {})
        if source == "new" and len(entries) < self.settings.domain_read_count:
            # Caught up: let notices accumulate for a moment. The work is per device
            # window, so a batch covering more time costs little more than a short one
            # (PROCESSOR_DOMAIN_BATCH_INTERVAL_S).
            rest = self.settings.domain_batch_interval_s - (time.monotonic() - started)
            if rest > 0 and not self.consumer.stopping:
                await self.consumer.sleep(rest)

    async def _handle(self, entries: list[Entry], counts: dict[str, int]) -> None:
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
        ids = [e[0] for e in entries]
        failures = 0
        while True:
            try:
                await self._process(merged)
                break
            except Exception as exc:
                # Not acknowledged; the same batch again after a backoff, in place: an
                # in-process failure counts no delivery (the poison guard is for notices
                # that crash the process, which are read again after the restart).
                failures += 1
                self.metrics.domain_failures.inc()
                error = f"{type(exc).__name__}: {exc}"[:500]
                log.error(
                    "domain_window_failed",
                    error=error,
                    notices=len(entries),
                    windows=len(merged),
                    attempt=failures,
                )
                gave_up = self._until_idle and failures >= self.settings.max_deliveries
                if gave_up or self.consumer.stopping:
                    # Left pending for a later run (or another instance's claim).
                    self.consumer.release(ids)
                    if gave_up:
                        self.left_pending += len(entries)
                        self.last_error = error
                        self.consumer.stop()
                    return
                await self.consumer.sleep(self._backoff.next_delay())
        self._backoff.reset()
        while True:
            try:
                await self.stream.finish(ack, letters, None)
                break
            except RedisError as exc:
                if self.consumer.stopping:
                    self.consumer.release(ids)  # pending: redone later
                    return
                await self.consumer.redis_trouble("ack", exc)
        self.consumer.release(ids)
        self.dead_lettered += sum(1 for d in letters if d.rejection.reason is Reason.MAX_DELIVERIES)
        for letter in letters:
            log.error(
                "domain_notice_dead_lettered",
                reason=letter.rejection.reason.value,
                notice=letter.rejection.stream_id,
                deliveries=letter.deliveries,
                dlq=self.stream.dlq_stream,
            )
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

        async def retried(mine: list[Window]) -> list[Window]:
            return await retrying(
                "domain_batch",
                lambda: part(mine),
                on=transient,
                policy=self._retry,
                count=lambda error: self.metrics.domain_retries.labels("domain_batch", error).inc(),
            )

        done = await asyncio.gather(*(retried(p) for p in parts if p))
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
                    await retrying(
                        "domain_window",
                        functools.partial(self._window, window),
                        on=transient,
                        policy=self._retry,
                        count=lambda error: self.metrics.domain_retries.labels(
                            "domain_window", error
                        ).inc(),
                    )
                except Exception as exc:
                    errors.append(exc)
                    return
                self.metrics.domain_window_duration.observe(time.perf_counter() - started)

        workers = min(self.settings.domain_concurrency, len(windows))
        await asyncio.gather(*(worker() for _ in range(workers)))
        if errors:
            raise errors[0]

    async def _window(self, window: Window) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await lock_device(conn, window.device_id)
            await self.handler(conn, window)

"""One consumer in one consumer group: the reading both the pipeline and the domain stage do.

Invariants:
- Every entry of the group reaches a handler (`Ingest`) until it is acknowledged: this
  consumer's own pending entries first (a restart under the same name), then new ones,
  then — every `claim_interval_ms` — entries idle for `claim_idle_ms` in any consumer of
  the group (a dead or stuck one).
- Each entry is handed with its delivery count (absent: delivered once), which the
  handler's poison guard reads. A claim counts no delivery for an entry this consumer
  holds in flight (XAUTOCLAIM JUSTID, then XCLAIM only of the others), so only real
  redeliveries count.
- Idle (`--until-idle`) means the group has nothing left for anyone: a read of new
  entries came back empty (no lag), no entry of the group is pending, whoever held it,
  and the handler has nothing in hand (`busy`). Entries a dead consumer holds are
  claimed once idle long enough, then handled; the loop does not end before.
- A lost group (NOGROUP: Redis restarted without persistence) is recreated from ID 0
  and counted. Redis errors are retried with backoff, counted per operation.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal, Protocol

import structlog
from redis.exceptions import RedisError

from processor.core.backoff import Backoff
from processor.core.settings import Settings
from processor.core.tasks import cancel_and_wait
from processor.observability.metrics import Metrics
from processor.stream.client import Entry, StreamClient, is_nogroup

log = structlog.get_logger(__name__)

Source = Literal["pending", "new", "claimed"]


class Ingest(Protocol):
    """Takes entries read from the group; `deliveries`: entry id → times delivered (for
    entries read again or claimed; None for new ones, each delivered once)."""

    def __call__(
        self, entries: list[Entry], source: Source, deliveries: dict[str, int] | None
    ) -> Awaitable[None]: ...


class GroupConsumer:
    """Reads one group as one consumer and hands what it reads to `ingest`.

    `in_flight` holds the ids handed out and not yet finished: the handler removes them
    (`release`) once acknowledged or given up on, and claims never take them back.
    `operation_prefix` labels the Redis error metrics (`domain_` for the domain stage).
    """

    def __init__(
        self,
        stream: StreamClient,
        settings: Settings,
        metrics: Metrics,
        *,
        read_count: int,
        operation_prefix: str = "",
    ) -> None:
        self.stream = stream
        self.settings = settings
        self.metrics = metrics
        self.read_count = read_count
        self.prefix = operation_prefix
        self.in_flight: set[str] = set()
        self.last_progress = time.monotonic()
        self._stop = asyncio.Event()
        self._backoff = Backoff(settings.retry_initial_ms / 1000, settings.retry_max_ms / 1000)

    # -- control -------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def release(self, ids: Sequence[str]) -> None:
        """These ids are done with (acknowledged, or left pending to be read again)."""
        self.in_flight.difference_update(ids)

    # -- the loop ------------------------------------------------------------------

    async def run(
        self, ingest: Ingest, *, until_idle: bool, busy: Callable[[], bool] = lambda: False
    ) -> None:
        """Read until `stop()`, or until idle with `until_idle`; claims run alongside."""
        await self.ensure_group()
        claimer = asyncio.create_task(self._claim_loop(ingest), name="claimer")
        try:
            await self.read_own_pending(ingest)
            await self._read_new(ingest, until_idle=until_idle, busy=busy)
        finally:
            await cancel_and_wait([claimer])

    async def ensure_group(self) -> None:
        while not self.stopping:
            try:
                if await self.stream.ensure_group():
                    log.info("group_created", stream=self.stream.stream, group=self.stream.group)
                return
            except RedisError as exc:
                await self.redis_trouble("ensure_group", exc)

    async def read_own_pending(self, ingest: Ingest) -> None:
        """This consumer's unacknowledged entries, from the start of its pending list."""
        cursor = "0"
        while not self.stopping:
            try:
                entries = await self.stream.read(cursor, self.read_count, None)
            except RedisError as exc:
                if is_nogroup(exc):
                    await self._recreate_group()
                    return
                await self.redis_trouble("read_pending", exc)
                continue
            if not entries:
                return
            cursor = entries[-1][0]
            fresh = [e for e in entries if e[0] not in self.in_flight]
            counts = await self.delivery_counts([e[0] for e in fresh if e[1] is not None])
            self.in_flight.update(e[0] for e in fresh)
            await ingest(fresh, "pending", counts)
            self.last_progress = time.monotonic()

    async def _read_new(
        self, ingest: Ingest, *, until_idle: bool, busy: Callable[[], bool]
    ) -> None:
        while not self.stopping:
            try:
                entries = await self.stream.read(">", self.read_count, self.settings.block_ms)
            except RedisError as exc:
                if is_nogroup(exc):
                    await self._recreate_group()
                else:
                    await self.redis_trouble("read", exc)
                continue
            self._backoff.reset()
            self.last_progress = time.monotonic()
            if entries:
                self.in_flight.update(e[0] for e in entries)
                await ingest(entries, "new", None)
            elif until_idle and await self.idle(busy):
                return

    async def idle(self, busy: Callable[[], bool] = lambda: False) -> bool:
        """Nothing new (the caller's read came back empty), nothing in hand, nothing
        pending in the group for any consumer."""
        if busy() or self.in_flight:
            return False
        try:
            return await self.stream.group_pending() == 0
        except RedisError as exc:
            await self.redis_trouble("xpending", exc)
            return False

    # -- claims --------------------------------------------------------------------

    async def _claim_loop(self, ingest: Ingest) -> None:
        interval = self.settings.claim_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                await self.claim_round(ingest)
            except RedisError as exc:
                if not is_nogroup(exc):
                    self.metrics.redis_errors.labels(f"{self.prefix}xautoclaim").inc()
                    log.warning("claim_failed", error=str(exc))
            except Exception:
                # Anything else is a bug, but the claimer must outlive it: without it,
                # entries of dead consumers would wait for a restart to be handled.
                self.metrics.redis_errors.labels(f"{self.prefix}xautoclaim").inc()
                log.exception("claim_round_crashed")

    async def claim_round(self, ingest: Ingest) -> None:
        """XAUTOCLAIM idle entries of dead or stalled consumers, following the cursor to 0-0."""
        cursor = "0-0"
        while not self.stopping:
            cursor, ids, deleted = await self.stream.autoclaim_ids(
                self.settings.claim_idle_ms, cursor, self.read_count
            )
            if deleted:
                self.metrics.trimmed_pending.inc(deleted)
                log.warning("claimed_entries_were_trimmed", count=deleted)
            # Entries we hold in flight were only re-taken (no delivery counted); the rest
            # are claimed for real, which counts the delivery for the poison-entry guard.
            fresh = await self.stream.claim([i for i in ids if i not in self.in_flight])
            fresh = [e for e in fresh if e[0] not in self.in_flight]  # taken meanwhile
            if fresh:
                self.metrics.claimed.inc(len(fresh))
                log.info("entries_claimed", count=len(fresh), stream=self.stream.stream)
                counts = await self.delivery_counts([e[0] for e in fresh if e[1] is not None])
                self.in_flight.update(e[0] for e in fresh)
                await ingest(fresh, "claimed", counts)
            if cursor == "0-0":
                return

    # -- helpers -------------------------------------------------------------------

    async def delivery_counts(self, ids: Sequence[str]) -> dict[str, int]:
        if not ids:
            return {}
        try:
            return await self.stream.delivery_counts(ids)
        except RedisError as exc:
            self.metrics.redis_errors.labels(f"{self.prefix}xpending").inc()
            log.warning("delivery_counts_unavailable", error=str(exc))
            return {}

    async def _recreate_group(self) -> None:
        """Redis lost the group (restart without persistence): start over from ID 0."""
        self.metrics.group_recreated.inc()
        log.error(
            "group_missing_recreating",
            stream=self.stream.stream,
            group=self.stream.group,
            hint="Redis restarted without persistence? Entries are re-read from ID 0.",
        )
        await self.sleep(self._backoff.next_delay())
        with contextlib.suppress(RedisError):
            await self.stream.ensure_group()

    async def redis_trouble(self, operation: str, exc: BaseException) -> None:
        self.metrics.redis_errors.labels(f"{self.prefix}{operation}").inc()
        delay = self._backoff.next_delay()
        log.warning(
            "redis_error",
            operation=f"{self.prefix}{operation}",
            error=str(exc),
            retry_in_s=round(delay, 3),
        )
        await self.sleep(delay)

    async def sleep(self, delay: float) -> None:
        """A pause that ends early on `stop()` (SIGTERM must not wait out a backoff)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay)

"""The outbox dispatcher: delivers `telemetry.outbox` to Directus's `processor_events`.

One process delivers at a time (it holds a PostgreSQL advisory lock on its own
connection; others stand by and take over within a poll interval when it goes away),
so every row's events reach Directus in version order. A round reads the oldest
undelivered events, sends one item per row (`deliveries.plan`), and records them
delivered only after Directus confirmed them; a round that fails is read again, fresh,
after a backoff, for as long as it takes: Directus down loses nothing, and meanwhile
the outbox holds one event per changed row (coalescing at write, `store.outbox`).
The dispatcher wakes on the writers' NOTIFY at commit, or every poll interval.
With `PROCESSOR_LIVE_ENABLED` each round is also published on the live stream for
gateways (`dispatch/live.py`), after Directus confirmed it; without a Directus URL that
stream is the only sink.

Invariant: an event is marked delivered only after Directus stored its row's newer or
equal version; a crash at any point leads to a redelivery, which Directus refuses by
`event_key` (counted as `already`), never to a lost or a doubled event.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import asyncpg
import structlog

from processor.core.backoff import Backoff
from processor.core.retry import forever, retrying
from processor.core.settings import Settings
from processor.core.tasks import cancel_and_wait
from processor.dispatch.deliveries import OutboxEvent, Plan, plan
from processor.dispatch.directus import DeliveryError, DirectusClient
from processor.dispatch.live import LivePublisher
from processor.domain_runner.store import OUTBOX_CHANNEL
from processor.observability.metrics import Metrics
from processor.storage.pool import single_connection
from processor.stream.client import connect

log = structlog.get_logger(__name__)
# pg_advisory_lock key of the delivering process ("outbox" in ASCII).
LEADER_LOCK = 0x6F7574626F78
_PRUNE_EVERY_S = 60.0
_SAMPLE_EVERY_S = 5.0
_PRUNE_BATCH = 10_000
_READ_SQL = """
    SELECT id, collection, row_key, change, kind, payload::text AS payload, created_at,
           event_key
    FROM telemetry.outbox WHERE delivered_at IS NULL ORDER BY id LIMIT $1
"""


class Dispatcher:
    """`processor dispatch`, or a task inside `run --with-domain` and `domain`."""

    def __init__(
        self, settings: Settings, metrics: Metrics, client: DirectusClient | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        # Directus, the live stream for gateways (dispatch/live.py), or both.
        self.client = client
        if client is None and settings.directus_url:
            self.client = DirectusClient(
                settings.directus_url,
                settings.directus_token.get_secret_value(),
                settings.dispatch_timeout_s,
            )
        self.live = (
            LivePublisher(connect(settings), settings.live_key, settings.live_maxlen)
            if settings.live_enabled
            else None
        )
        self.leader = False
        self.running = False
        self.last_progress = time.monotonic()
        self.failing: tuple[float, str] | None = None  # since (monotonic), reason
        # Events per round: halved after a failure (a loaded Directus that times out on a
        # big batch gets smaller ones), doubled back after each success.
        self.batch = settings.dispatch_batch
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def status(self) -> str:
        """For `/readyz`: `ok`, `standby`, or since when and why deliveries fail."""
        if not self.running:
            return "not running"
        if self.failing is not None:
            since, reason = self.failing
            return f"failing for {time.monotonic() - since:.0f} s: {reason}"
        return "ok" if self.leader else "standby"

    async def run(self, *, until_empty: bool = False) -> None:
        """Deliver until stopped (or, `until_empty`, until nothing is left undelivered).
        A stop interrupts whatever is in hand, a delivery retried for ever included:
        that is safe at any point (the invariant)."""
        work = asyncio.create_task(self._run(until_empty), name="dispatch")
        stopped = asyncio.create_task(self._stop.wait(), name="dispatch-stop")
        try:
            await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait([work, stopped])
        failure = work.exception() if work.done() and not work.cancelled() else None
        if failure is not None:
            raise failure

    async def _run(self, until_empty: bool) -> None:
        s = self.settings
        backoff = Backoff(s.retry_initial_ms / 1000, s.retry_max_ms / 1000)
        self.running = True
        try:
            while not self._stop.is_set():
                try:
                    async with single_connection(
                        s.database_url.get_secret_value(), s.db_connect_timeout_s
                    ) as conn:
                        backoff.reset()
                        if await self._lead(conn, until_empty=until_empty):
                            return
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    self._lost_leadership()
                    delay = backoff.next_delay()
                    log.warning("dispatch_database_error", error=str(exc)[:300], retry_in_s=delay)
                    await self._sleep(delay)
        finally:
            self._lost_leadership()
            self.running = False
            if self.client is not None:
                await self.client.close()
            if self.live is not None:
                await self.live.close()

    async def _lead(self, conn: asyncpg.Connection, *, until_empty: bool) -> bool:
        """Stand by until this connection holds the lock, then deliver; True when done."""
        while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LEADER_LOCK):
            self.last_progress = time.monotonic()
            if await self._sleep(self.settings.dispatch_poll_s):
                return True
        self.leader = True
        self.metrics.dispatch_leader.set(1)
        log.info(
            "dispatch_leading",
            directus=self.settings.directus_url,
            live=self.settings.live_key if self.live else None,
        )
        await conn.add_listener(OUTBOX_CHANNEL, self._notified)
        sampled = pruned = 0.0
        while not self._stop.is_set():
            self._wake.clear()
            read = await self._round(conn)
            now = time.monotonic()
            self.last_progress = now
            if now - sampled >= _SAMPLE_EVERY_S or read == 0:
                await self._sample(conn)
                sampled = now
            if now - pruned >= _PRUNE_EVERY_S:
                await self._prune(conn)
                pruned = now
            if read == 0 and until_empty:
                return True
            if read < self.batch:
                await self._sleep(self.settings.dispatch_poll_s)
        return True

    def _notified(self, *_: Any) -> None:
        self._wake.set()

    async def _sleep(self, seconds: float) -> bool:
        """Wait for a NOTIFY, a stop or `seconds`; True when stopped."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        return self._stop.is_set()

    async def _round(self, conn: asyncpg.Connection) -> int:
        """One batch delivered (read again on every retry: a newer state may have
        replaced what failed); the number of events it covered."""

        async def attempt() -> Plan:
            rows = await conn.fetch(_READ_SQL, self.batch)
            p = plan(OutboxEvent(**dict(r)) for r in rows)
            items = [d.item() for d in p.deliveries]
            already = await self.client.create(items) if self.client is not None else 0
            if self.live is not None:  # after Directus confirmed: the same state
                await self.live.publish(p.deliveries)
            await conn.execute(
                "UPDATE telemetry.outbox SET delivered_at = now() WHERE id = ANY($1::bigint[])",
                p.ids,
            )
            self._delivered(p, already)
            self.batch = min(self.settings.dispatch_batch, self.batch * 2)
            return p

        def classify(exc: BaseException) -> str | None:
            if not isinstance(exc, DeliveryError):
                return None
            self.batch = max(1, self.batch // 2)
            if self.failing is None:
                self.failing = (time.monotonic(), str(exc))
                log.warning("dispatch_failing", reason=exc.reason, error=str(exc)[:300])
            else:
                self.failing = (self.failing[0], str(exc))
            return exc.reason

        s = self.settings
        done = await retrying(
            "dispatch",
            attempt,
            on=classify,
            policy=forever(s.retry_initial_ms / 1000, s.retry_max_ms / 1000),
            count=lambda reason: self.metrics.dispatch_failures.labels(reason).inc(),
        )
        if self.failing is not None:
            log.info("dispatch_recovered", failing_s=round(time.monotonic() - self.failing[0], 1))
            self.failing = None
        return len(done.ids)

    def _delivered(self, p: Plan, already: int) -> None:
        m = self.metrics
        m.dispatch_events.labels("delivered").inc(len(p.deliveries) - already)
        m.dispatch_events.labels("already").inc(already)
        m.dispatch_events.labels("coalesced").inc(p.coalesced)
        now = time.time()
        for d in p.deliveries:
            m.dispatch_latency.observe(max(0.0, now - d.event.created_at.timestamp()))

    async def _sample(self, conn: asyncpg.Connection) -> None:
        row = await conn.fetchrow(
            "SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(created_at)), 0)"
            " AS age FROM telemetry.outbox WHERE delivered_at IS NULL"
        )
        assert row is not None
        self.metrics.outbox_undelivered.set(row["n"])
        self.metrics.outbox_oldest_age.set(float(row["age"]))

    async def _prune(self, conn: asyncpg.Connection) -> None:
        if self.settings.outbox_retention_s <= 0:
            return
        while not self._stop.is_set():
            deleted = await conn.fetchval(
                """
                WITH old AS (
                    DELETE FROM telemetry.outbox WHERE id IN (
                        SELECT id FROM telemetry.outbox
                        WHERE delivered_at < now() - make_interval(secs => $1)
                        ORDER BY delivered_at LIMIT $2)
                    RETURNING 1)
                SELECT count(*) FROM old
                """,
                float(self.settings.outbox_retention_s),
                _PRUNE_BATCH,
            )
            self.metrics.outbox_pruned.inc(deleted)
            if deleted < _PRUNE_BATCH:
                return

    def _lost_leadership(self) -> None:
        if self.leader:
            log.info("dispatch_standing_down")
        self.leader = False
        self.metrics.dispatch_leader.set(0)

"""The core pipeline: Redis Stream in, `telemetry.positions` out, acknowledged after commit.

Reading overlaps writing: sealed batches are committed by up to `batches_in_flight`
tasks while the reader fills the next one. When every slot is busy (the database is
slow or down) the reader waits, so memory stays bounded and the stream itself is the
buffer. An entry ID is acknowledged only in the MULTI/EXEC that follows the commit of
its batch, together with its dead letters and the committed notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from processor.core.backoff import Backoff
from processor.core.contract import DecodeOptions, decode_entry
from processor.core.logging import RateLimiter
from processor.core.position import Position, Reason, Rejection
from processor.core.settings import Settings
from processor.core.tasks import cancel_and_wait
from processor.observability.metrics import Metrics
from processor.pipeline.batch import Batch, committed_notice
from processor.state.devices import DeviceState
from processor.storage.writer import PositionWriter
from processor.stream.client import DeadLetter, Entry, StreamClient, is_nogroup
from processor.stream.consumer import GroupConsumer, Source

log = structlog.get_logger(__name__)

_LATENCY_SAMPLES_PER_BATCH = 256


class Pipeline:
    """One consumer's run loop; `run()` until `stop()` (or until idle)."""

    def __init__(
        self,
        settings: Settings,
        stream: StreamClient,
        writer: PositionWriter,
        metrics: Metrics,
        state: DeviceState | None = None,
    ) -> None:
        self.settings = settings
        self.stream = stream
        self.writer = writer
        self.metrics = metrics
        self.state = state or DeviceState(settings.state_max_devices, settings.dedupe_window)
        self.options = DecodeOptions(
            max_future_ms=settings.max_future_s * 1000,
            correct_week_rollover=settings.correct_week_rollover,
        )
        self._batch = Batch()
        self._slots = asyncio.Semaphore(settings.batches_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self.consumer = GroupConsumer(stream, settings, metrics, read_count=settings.read_count)
        self._stop = asyncio.Event()
        self._shutdown_deadline: float | None = None
        self._reject_log = RateLimiter(settings.log_rejections_per_s)
        self._backoff = Backoff(settings.retry_initial_ms / 1000, settings.retry_max_ms / 1000)
        self.running = False
        self.committed_batches = 0
        self._evictions_seen = 0

    # -- lifecycle ---------------------------------------------------------------

    def stop(self) -> None:
        """Stop reading; `run()` then flushes, acknowledges and returns."""
        self._stop.set()
        self.consumer.stop()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def run(self, *, until_idle: bool = False) -> bool:
        """Consume until stopped; True when every read entry was committed and acknowledged."""
        self.running = True
        helpers = [asyncio.create_task(self._flush_ticker(), name="flush-ticker")]
        reading = asyncio.create_task(
            self.consumer.run(self._ingest, until_idle=until_idle, busy=self._busy),
            name="reader",
        )
        try:
            await self._until_read_or_stopped(reading)
        finally:
            await cancel_and_wait(helpers)
            clean = await self._drain()
            self.running = False
        return clean and not reading.cancelled()

    async def _until_read_or_stopped(self, reading: asyncio.Task[None]) -> None:
        """The reader ends at its next check once stopped, unless it waits for a batch slot
        that a commit stuck on the database holds: that wait gets the shutdown timeout."""
        stopped = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({reading, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if self.stopping:  # one shutdown budget for the reader, the seal and the commits
                self._shutdown_deadline = time.monotonic() + self.settings.shutdown_timeout_s
            if not reading.done():
                await asyncio.wait({reading}, timeout=self._shutdown_left())
            if not reading.done():
                log.error("shutdown_reader_stuck", waited_s=self.settings.shutdown_timeout_s)
                await cancel_and_wait([reading])
        finally:
            stopped.cancel()
            if not reading.done():  # run() itself was cancelled
                await cancel_and_wait([reading])
        if not reading.cancelled():
            reading.result()  # the reader's own error, as before

    def _shutdown_left(self) -> float:
        if self._shutdown_deadline is None:
            return float(self.settings.shutdown_timeout_s)
        return max(0.0, self._shutdown_deadline - time.monotonic())

    async def _drain(self) -> bool:
        if len(self._batch):
            try:
                await asyncio.wait_for(self._seal(), self._shutdown_left())
            except TimeoutError:
                log.error("shutdown_seal_timeout")
        if not self._tasks:
            return True
        done, pending = await asyncio.wait(set(self._tasks), timeout=self._shutdown_left())
        if pending:
            await cancel_and_wait(pending)
            log.error("shutdown_timeout", unfinished_batches=len(pending))
            return False
        return all(not t.cancelled() and t.exception() is None for t in done)

    def _busy(self) -> bool:
        """Batches being filled or committed: not idle yet, whatever the group says."""
        return bool(self._tasks or len(self._batch))

    @property
    def last_progress(self) -> float:
        return self.consumer.last_progress

    # -- batching ----------------------------------------------------------------

    async def _ingest(
        self, entries: list[Entry], source: Source, deliveries: dict[str, int] | None
    ) -> None:
        self.metrics.entries_read.labels(source).inc(len(entries))
        max_deliveries = self.settings.max_deliveries
        max_rows = self.settings.batch_max_rows
        options = self.options
        observe = self.state.observe
        # The consumer marked all of them in flight: while a full batch waits for a slot,
        # the rest of this read is held here, and the claimer never takes them back.
        for entry_id, fields in entries:
            batch = self._batch
            if fields is None:
                self.metrics.trimmed_pending.inc()
                batch.ack_ids.append(entry_id)
            elif deliveries is not None and deliveries.get(entry_id, 1) > max_deliveries:
                count = deliveries[entry_id]
                detail = f"delivered {count} times without being committed"
                self._reject(
                    batch, Rejection(Reason.MAX_DELIVERIES, detail, entry_id), fields, count
                )
            else:
                result = decode_entry(entry_id, fields, options)
                if type(result) is Position:
                    observation = observe(result)
                    batch.ack_ids.append(entry_id)
                    if observation.duplicate:
                        batch.state_duplicates += 1
                    else:
                        batch.positions.append(result)
                        if observation.late:
                            self.metrics.late_positions.inc()
                        elif (
                            observation.implied_speed_kmh is not None
                            and observation.implied_speed_kmh > self.settings.max_implied_speed_kmh
                        ):
                            self.metrics.implied_speed_exceeded.inc()
                else:
                    assert isinstance(result, Rejection)
                    count = 1 if deliveries is None else deliveries.get(entry_id, 1)
                    self._reject(batch, result, fields, count)
            if len(batch) >= max_rows:
                await self._seal()

    def _reject(
        self, batch: Batch, rejection: Rejection, fields: dict[bytes, bytes], count: int
    ) -> None:
        batch.ack_ids.append(rejection.stream_id)
        batch.dead_letters.append(DeadLetter(rejection, fields, count))
        self.metrics.rejections.labels(rejection.reason.value).inc()
        if self._reject_log.allow():
            suppressed = self._reject_log.take_suppressed()
            if suppressed:
                self.metrics.log_suppressed.inc(suppressed)
            log.warning(
                "entry_rejected",
                reason=rejection.reason.value,
                detail=rejection.detail,
                stream_id=rejection.stream_id,
                suppressed_since_last=suppressed,
            )

    async def _flush_ticker(self) -> None:
        max_age = self.settings.batch_max_age_ms / 1000
        while True:
            await asyncio.sleep(max_age / 4)
            batch = self._batch
            if len(batch) and batch.age_s() >= max_age and not self._slots.locked():
                await self._seal()

    async def _seal(self) -> None:
        """Hand the current batch to a commit task; waits while every slot is busy."""
        batch = self._batch
        self._batch = Batch()
        await self._slots.acquire()
        self.metrics.batches_in_flight.inc()
        task = asyncio.create_task(self._commit(batch), name="commit")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- committing --------------------------------------------------------------

    async def _commit(self, batch: Batch) -> None:
        try:
            dead_letters = list(batch.dead_letters)
            inserted = 0
            if batch.positions:
                result = await self.writer.write(batch.positions)
                inserted = result.inserted
                for position, error in result.failed:
                    self.state.forget(position)
                    dead_letters.append(await self._storage_rejection(position, error))
            notice = committed_notice(batch.positions)
            await self._finish(batch.ack_ids, dead_letters, notice)
            if notice is not None and self.stream.notice_stream is not None:
                self.metrics.notices_published.inc()
            self._account(batch, inserted, dead_letters)
        except Exception:
            log.exception("batch_failed_unacknowledged", entries=len(batch))
            raise
        finally:
            self.consumer.release(batch.ack_ids)
            self._slots.release()
            self.metrics.batches_in_flight.dec()

    async def _storage_rejection(self, position: Position, error: str) -> DeadLetter:
        rejection = Rejection(Reason.STORAGE_REJECTED, error, position.stream_id)
        self.metrics.rejections.labels(rejection.reason.value).inc()
        log.error(
            "row_rejected_by_database",
            stream_id=position.stream_id,
            device_id=position.device_id,
            error=error,
        )
        fields: dict[bytes, bytes] = {}
        with contextlib.suppress(RedisError):
            found: Any = await self.stream.redis.xrange(
                self.stream.stream, position.stream_id, position.stream_id
            )
            if found:
                fields = dict(found[0][1])
        return DeadLetter(rejection, fields, 1)

    async def _finish(
        self, ack_ids: list[str], dead_letters: list[DeadLetter], notice: bytes | None
    ) -> None:
        """MULTI/EXEC of dead letters, notice and XACK, retried until Redis confirms it."""
        backoff = Backoff(self.settings.retry_initial_ms / 1000, self.settings.retry_max_ms / 1000)
        uncertain = False
        while True:
            try:
                if uncertain and not await self.stream.pending_of_mine(ack_ids):
                    return  # the earlier EXEC went through; its reply was lost
                await self.stream.finish(ack_ids, dead_letters, notice)
                return
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                uncertain = True
                self.metrics.redis_errors.labels("ack").inc()
                self.metrics.retries.labels("redis").inc()
                delay = backoff.next_delay()
                log.warning("ack_retry", error=str(exc), retry_in_s=round(delay, 3))
                await asyncio.sleep(delay)
            except RedisError as exc:
                if is_nogroup(exc):
                    log.error("ack_lost_group", entries=len(ack_ids))
                    return
                raise

    def _account(self, batch: Batch, inserted: int, dead_letters: list[DeadLetter]) -> None:
        m = self.metrics
        m.positions_inserted.inc(inserted)
        stored_before = (
            len(batch.positions) - inserted - (len(dead_letters) - len(batch.dead_letters))
        )
        if stored_before:
            m.duplicates.labels("database").inc(stored_before)
        if batch.state_duplicates:
            m.duplicates.labels("state").inc(batch.state_duplicates)
        for letter in dead_letters:
            m.dead_letters.labels(letter.rejection.reason.value).inc()
        now = time.time()
        m.last_commit.set(now)
        positions = batch.positions
        if positions:
            stride = max(1, len(positions) // _LATENCY_SAMPLES_PER_BATCH)
            observe = m.commit_latency.observe
            for p in positions[::stride]:
                observe(max(0.0, now - p.received_at_ms / 1000))
        m.state_devices.set(len(self.state))
        m.state_evictions.inc(self.state.evictions - self._evictions_seen)
        self._evictions_seen = self.state.evictions
        self.committed_batches += 1

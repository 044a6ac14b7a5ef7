"""Wiring: settings → components → run loop, on the shared service lifecycle (service.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import asyncpg
import structlog

from processor.core.backoff import Backoff
from processor.core.settings import Settings
from processor.core.tasks import cancel_and_wait
from processor.dispatch.dispatcher import Dispatcher
from processor.domain_runner.config_source import ConfigSource
from processor.domain_runner.outputs import DomainOutputs
from processor.domain_runner.runner import (
    DomainRunner,
    TickingHandler,
    WindowHandler,
    notice_settings,
)
from processor.observability.metrics import Metrics
from processor.observability.sampler import run_jobs_sampler, run_sampler
from processor.pipeline.runner import Pipeline
from processor.service import DatabaseRefusedError, Service
from processor.storage.pool import close_pool_bounded, create_pool
from processor.storage.writer import PositionWriter
from processor.stream.client import StreamClient, connect

log = structlog.get_logger(__name__)


@contextlib.asynccontextmanager
async def open_pipeline(
    settings: Settings, metrics: Metrics | None = None
) -> AsyncIterator[Pipeline]:
    """A pipeline with its own Redis client and pool, closed on exit (tests, tools, bench)."""
    metrics = metrics or Metrics()
    redis = connect(settings)
    pool = await create_pool(settings)
    try:
        yield Pipeline(
            settings, StreamClient(redis, settings), _writer(pool, metrics, settings), metrics
        )
    finally:
        await pool.close()
        await redis.aclose()


def _writer(pool: asyncpg.Pool, metrics: Metrics, settings: Settings) -> PositionWriter:
    return PositionWriter(
        pool,
        metrics,
        method=settings.write_method,
        retry_initial_s=settings.retry_initial_ms / 1000,
        retry_max_s=settings.retry_max_ms / 1000,
    )


async def run_processor(
    settings: Settings, *, until_idle: bool = False, with_domain: bool = False
) -> int:
    """Run one consumer until SIGTERM/SIGINT (or until the stream is drained); exit code.

    `with_domain`: the domain stage runs in the same process as an independent, supervised
    task with its own pool and Redis client; its failures are logged and counted, never
    propagated, and the exit code is the pipeline's alone.
    """
    metrics = Metrics()
    domain = DomainStage(settings, metrics) if with_domain else None
    async with Service("processor", settings, metrics) as service:
        if domain is not None:
            service.on_stop(domain.stop)
        redis = service.redis(settings)
        try:
            pool = await service.open_database()
        except DatabaseRefusedError:
            return 2
        if pool is None:
            return 0
        stream = StreamClient(redis, settings)
        pipeline = Pipeline(settings, stream, _writer(pool, metrics, settings), metrics)
        service.on_stop(pipeline.stop)
        dispatcher = _dispatcher(service) if with_domain else None
        if not await service.serve_http(redis, pipeline, _reports(dispatcher)):
            return 2
        service.background(run_sampler(stream, pool, metrics), "sampler")
        if service.mode == "timescale" and settings.timescale_jobs_sample_s > 0:
            service.background(
                run_jobs_sampler(pool, metrics, settings.timescale_jobs_sample_s), "jobs-sampler"
            )
        domain_task = asyncio.create_task(domain.run(), name="domain") if domain else None
        log.info(
            "processor_started",
            stream=settings.stream,
            group=settings.group,
            consumer=settings.consumer,
            write_method=settings.write_method,
            with_domain=with_domain,
        )
        try:
            clean = await pipeline.run(until_idle=until_idle)
            if domain is not None and until_idle and not service.stopped.is_set():
                # The last batches' notices are on the stream now: let the stage take them.
                domain.drain()
        finally:
            if domain is not None and domain_task is not None:
                if not domain.draining:
                    domain.stop()
                # Draining has no deadline (SIGTERM still stops it); stopping has the
                # shutdown's.
                timeout = None if domain.draining else settings.shutdown_timeout_s
                await _finish_domain(domain_task, timeout)
    log.info("processor_stopped", clean=clean)
    return 0 if clean else 1


class DomainStage:
    """The domain stage as a unit: a `DomainRunner` on the notice stream, supervised.

    The runner already survives what it expects (a failing window is retried with its
    notices left pending; Redis errors are retried). Anything else that ends it — a bug,
    a pool that cannot connect — is logged, counted (`processor_domain_restarts_total`)
    and followed by a restart after a backoff, so inside `processor run --with-domain` the
    stage can never take the core pipeline down with it (DESIGN rule 1). Restarting is
    safe: notices are acknowledged only after their windows commit, and every output is
    an idempotent upsert.

    With `pool=None` the stage opens its own pool (sized for `domain_concurrency`) and
    Redis client, so a slow or stuck stage cannot hold the core's connections.
    """

    # A run that lasted this long was healthy: the next failure starts the backoff afresh.
    HEALTHY_RUN_S = 60.0

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        *,
        pool: asyncpg.Pool | None = None,
        handler: WindowHandler | None = None,
    ) -> None:
        self.settings = notice_settings(settings)
        self.metrics = metrics
        self.handler = handler or DomainOutputs(ConfigSource(settings.config_refresh_s, metrics))
        self.runner: DomainRunner | None = None
        self._pool = pool
        self._stop = asyncio.Event()
        self._draining = False
        self._started = time.monotonic()
        self.crashed = False
        self.dead_lettered = 0  # notices given up on (after max_deliveries), all runs
        self.left_pending = 0  # --until-idle: notices whose batch kept failing
        self.last_error: str | None = None

    @property
    def running(self) -> bool:
        return self.runner is not None and self.runner.running

    @property
    def last_progress(self) -> float:
        return self.runner.last_progress if self.runner is not None else self._started

    @property
    def draining(self) -> bool:
        return self._draining and not self._stop.is_set()

    def stop(self) -> None:
        """Stop after the batch in hand (its notices stay pending if not finished)."""
        self._stop.set()
        if self.runner is not None:
            self.runner.stop()

    def drain(self) -> None:
        """Finish the notices already on the stream, then return from `run()`."""
        self._draining = True
        if self.runner is not None:
            self.runner.stop()

    async def run(self, *, until_idle: bool = False) -> None:
        """Run (and restart) the runner until `stop()`, or until idle after `drain()`.

        Until idle (a one-off pass), an unexpected error ends the pass instead of
        restarting it forever; `crashed` tells the caller.
        """
        backoff = Backoff(self.settings.retry_initial_ms / 1000, self.settings.retry_max_ms / 1000)
        while not self._stop.is_set():
            draining = until_idle or self._draining
            started = time.monotonic()
            try:
                await self._run_once(until_idle=draining)
            except Exception as exc:  # supervised: whatever ended the runner, restart it
                if time.monotonic() - started >= self.HEALTHY_RUN_S:
                    backoff.reset()
                delay = backoff.next_delay()
                self.crashed = True
                self.metrics.domain_restarts.inc()
                log.error(
                    "domain_stage_crashed",
                    error=f"{type(exc).__name__}: {exc}"[:500],
                    restart_in_s=None if draining else round(delay, 2),
                    exc_info=True,
                )
                if draining:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                continue
            if draining:
                return
            # Otherwise the runner returned because stop() or drain() stopped it: loop,
            # and end at the top (stopped) or make the final pass (draining).

    async def _run_once(self, *, until_idle: bool) -> None:
        redis = connect(self.settings)
        pool = self._pool
        own_pool = pool is None
        try:
            if pool is None:
                pool = await create_pool(
                    self.settings.model_copy(
                        update={"db_pool_size": self.settings.domain_concurrency}
                    ),
                    prepare_stage=False,
                )
            runner = DomainRunner(
                self.settings, StreamClient(redis, self.settings), pool, self.handler, self.metrics
            )
            self.runner = runner
            if self._stop.is_set() or (self._draining and not until_idle):
                return  # stop() or drain() came while connecting: the loop decides
            log.info(
                "domain_stage_started",
                stream=self.settings.stream,
                group=self.settings.group,
                consumer=self.settings.consumer,
                until_idle=until_idle,
            )
            ticking = None
            if isinstance(self.handler, TickingHandler):
                ticking = asyncio.create_task(self._ticks(self.handler, pool), name="domain-tick")
            try:
                await runner.run(until_idle=until_idle)
                if until_idle and isinstance(self.handler, TickingHandler):
                    async with pool.acquire() as conn:
                        await self.handler.tick(conn)  # a one-off pass ends with the clock's part
            finally:
                self.dead_lettered += runner.dead_lettered
                self.left_pending += runner.left_pending
                self.last_error = runner.last_error or self.last_error
                if ticking is not None:
                    await cancel_and_wait([ticking])
        finally:
            if own_pool and pool is not None:
                await close_pool_bounded(pool)
            await redis.aclose()

    async def _ticks(self, handler: TickingHandler, pool: asyncpg.Pool) -> None:
        """The clock's part every `domain_tick_s`; a failed tick is logged, counted and
        retried at the next one (the windows go on meanwhile)."""
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.settings.domain_tick_s)
            if self._stop.is_set():
                return
            try:
                async with pool.acquire() as conn:
                    await handler.tick(conn)
            except Exception as exc:
                self.metrics.domain_failures.inc()
                log.error("domain_tick_failed", error=f"{type(exc).__name__}: {exc}"[:500])


async def _finish_domain(task: asyncio.Task[None], timeout_s: float | None) -> None:
    """Wait for the stage to end; cancel it past the timeout (its unfinished notices stay
    pending and are redone: cancelling loses nothing)."""
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        log.error("domain_stage_stop_timeout", waited_s=timeout_s)
        await cancel_and_wait([task])
    (outcome,) = await asyncio.gather(task, return_exceptions=True)
    if isinstance(outcome, Exception):  # run() catches what the runner raises; not expected
        log.error("domain_stage_failed", error=repr(outcome)[:500])


def _dispatcher(service: Service) -> Dispatcher | None:
    """The outbox dispatcher as a task of `service`, when Directus is configured (one
    process of all those running delivers; the others stand by)."""
    if not service.settings.dispatching:
        return None
    dispatcher = Dispatcher(service.settings, service.metrics)
    service.on_stop(dispatcher.stop)
    service.background(dispatcher.run(), "dispatch")
    return dispatcher


def _reports(dispatcher: Dispatcher | None) -> dict[str, Callable[[], str]]:
    return {} if dispatcher is None else {"dispatch": dispatcher.status}


async def run_dispatcher(settings: Settings, *, until_empty: bool = False) -> int:
    """`processor dispatch`: the outbox dispatcher as a process of its own; exit code."""
    if not (settings.directus_url or settings.live_enabled):
        log.error(
            "dispatch_not_configured",
            hint="set PROCESSOR_DIRECTUS_URL and _TOKEN, or PROCESSOR_LIVE_ENABLED=true",
        )
        return 2
    metrics = Metrics()
    async with Service("dispatch", settings, metrics) as service:
        try:
            pool = await service.open_database()
        except DatabaseRefusedError:
            return 2
        if pool is None:
            return 0
        dispatcher = Dispatcher(settings, metrics)
        service.on_stop(dispatcher.stop)
        redis = service.redis(settings)
        if not await service.serve_http(redis, dispatcher, _reports(dispatcher)):
            return 2
        await dispatcher.run(until_empty=until_empty)
    return 0


async def run_domain_stage(settings: Settings, *, until_idle: bool = False) -> int:
    """`processor domain`: the domain stage as a process of its own; exit code.

    Mirrors `run_processor`: migrations (idempotent, advisory-locked), signals, HTTP on the
    same settings (so next to a `processor run` on one host, give it another
    `PROCESSOR_HTTP_PORT`). The stream gauges of `/metrics` describe the notice stream and
    the domain group here. With `until_idle`, exits once the domain group has no notice
    left, pending or new, whoever held it: 0 when every notice was handled (a failed
    window retried until it succeeds counts as handled), 1 when something is truly left,
    logged as `domain_work_left`: a batch that failed `max_deliveries` times in a row
    (its notices stay pending), notices dead-lettered after crashes, or a crashed stage.
    """
    metrics = Metrics()
    pool_settings = settings.model_copy(
        update={"db_pool_size": max(settings.db_pool_size, settings.domain_concurrency + 1)}
    )
    async with Service("domain", settings, metrics) as service:
        try:
            pool = await service.open_database(pool_settings)
        except DatabaseRefusedError:
            return 2
        if pool is None:
            return 0
        stage = DomainStage(settings, metrics, pool=pool)
        service.on_stop(stage.stop)
        redis = service.redis(stage.settings)
        dispatcher = _dispatcher(service)
        if not await service.serve_http(redis, stage, _reports(dispatcher)):
            return 2
        service.background(
            run_sampler(StreamClient(redis, stage.settings), pool, metrics), "sampler"
        )
        running = asyncio.create_task(stage.run(until_idle=until_idle), name="domain")
        stopped = asyncio.create_task(service.stopped.wait())
        await asyncio.wait({running, stopped}, return_when=asyncio.FIRST_COMPLETED)
        await cancel_and_wait([stopped])
        # Stopped: the batch in hand gets the shutdown timeout, then it is cancelled.
        await _finish_domain(running, settings.shutdown_timeout_s)
    failures = metrics.registry.get_sample_value("processor_domain_failures_total") or 0.0
    log.info(
        "domain_stage_stopped",
        failed_batches=int(failures),
        dead_lettered=stage.dead_lettered,
        crashed=stage.crashed,
    )
    left = stage.dead_lettered or stage.left_pending or stage.crashed
    if until_idle and left:
        log.error(
            "domain_work_left",
            dead_lettered_notices=stage.dead_lettered,
            pending_notices=stage.left_pending,
            last_error=stage.last_error,
            crashed=stage.crashed,
            hint=f"pending notices are retried by the next run; dead letters are on"
            f" {stage.settings.dlq_stream} (processor dlq list): fix the cause, then requeue"
            " them or run processor recompute",
        )
    return 1 if until_idle and left else 0

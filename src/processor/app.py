"""Wiring: settings → components → run loop, signals, HTTP. Explicit start and stop."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

import asyncpg
import structlog

from processor.core.backoff import Backoff
from processor.core.settings import Settings
from processor.observability.health import HealthProbe
from processor.observability.http import HttpServer, build_app
from processor.observability.metrics import Metrics
from processor.observability.sampler import run_sampler
from processor.pipeline.runner import Pipeline
from processor.storage.migrate import migrate
from processor.storage.pool import create_pool
from processor.storage.writer import PositionWriter
from processor.stream.client import StreamClient, connect

log = structlog.get_logger(__name__)


async def open_pool(settings: Settings, stop: asyncio.Event) -> asyncpg.Pool | None:
    """Connect (and migrate) with backoff: a database that is still starting is not fatal."""
    backoff = Backoff(settings.retry_initial_ms / 1000, settings.retry_max_ms / 1000)
    while not stop.is_set():
        try:
            conn = await asyncpg.connect(
                settings.database_url.get_secret_value(), timeout=settings.db_connect_timeout_s
            )
            try:
                report = await migrate(conn, settings)
            finally:
                await conn.close()
            log.info("schema_ready", mode=report.mode, applied=report.applied)
            return await create_pool(settings)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            delay = backoff.next_delay()
            log.warning("database_unavailable", error=str(exc)[:300], retry_in_s=round(delay, 2))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
    return None


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


async def run_processor(settings: Settings, *, until_idle: bool = False) -> int:
    """Run one consumer until SIGTERM/SIGINT (or until the stream is drained); exit code."""
    metrics = Metrics()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    pipeline: Pipeline | None = None

    def on_signal(name: str) -> None:
        log.info("shutdown_requested", signal=name)
        stop.set()
        if pipeline is not None:
            pipeline.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)

    redis = connect(settings)
    pool = await open_pool(settings, stop)
    if pool is None:
        await redis.aclose()
        return 0
    stream = StreamClient(redis, settings)
    pipeline = Pipeline(settings, stream, _writer(pool, metrics, settings), metrics)
    probe = HealthProbe(
        pool,
        redis,
        last_progress=lambda: pipeline.last_progress,
        loop_running=lambda: pipeline.running,
        stall_s=settings.ready_stall_s,
    )
    server: HttpServer | None = None
    if settings.http_enabled:
        server = HttpServer(build_app(metrics, probe), settings.http_host, settings.http_port)
        port = await server.start()
        log.info("http_listening", host=settings.http_host, port=port)
    sampler = asyncio.create_task(run_sampler(stream, pool, metrics))
    log.info(
        "processor_started",
        stream=settings.stream,
        group=settings.group,
        consumer=settings.consumer,
        write_method=settings.write_method,
    )
    try:
        clean = await pipeline.run(until_idle=until_idle)
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
        if server is not None:
            await server.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pool.close(), 5)
        await redis.aclose()
    log.info("processor_stopped", clean=clean)
    return 0 if clean else 1

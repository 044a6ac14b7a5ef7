"""Periodic gauges read from Redis and the pool: sampled, never per entry."""

from __future__ import annotations

import asyncio
import contextlib
import time

import asyncpg
import structlog
from redis.exceptions import RedisError

from processor.observability.metrics import Metrics
from processor.storage import timescale
from processor.stream.client import StreamClient

log = structlog.get_logger(__name__)


async def sample_once(stream: StreamClient, pool: asyncpg.Pool | None, metrics: Metrics) -> None:
    """Stream length, group lag and pending count, dead letters, pool usage."""
    redis = stream.redis
    pipe = redis.pipeline(transaction=False)
    pipe.xlen(stream.stream)
    pipe.xlen(stream.dlq_stream)
    pipe.xinfo_groups(stream.stream)
    length, dlq_length, groups = await pipe.execute(raise_on_error=False)
    if isinstance(length, int):
        metrics.stream_length.set(length)
    if isinstance(dlq_length, int):
        metrics.dlq_length.set(dlq_length)
    if isinstance(groups, list):
        for group in groups:
            name = group.get("name")
            if (name.decode() if isinstance(name, bytes) else name) == stream.group:
                metrics.pending.set(group.get("pending") or 0)
                lag = group.get("lag")
                if lag is not None:
                    metrics.consumer_lag.set(lag)
    if pool is not None:
        size = pool.get_size()
        idle = pool.get_idle_size()
        metrics.db_pool.labels("in_use").set(size - idle)
        metrics.db_pool.labels("idle").set(idle)
        metrics.db_pool.labels("max").set(pool.get_max_size())


async def run_sampler(
    stream: StreamClient, pool: asyncpg.Pool | None, metrics: Metrics, interval_s: float = 5.0
) -> None:
    while True:
        with contextlib.suppress(RedisError, OSError):
            await sample_once(stream, pool, metrics)
        await asyncio.sleep(interval_s)


async def sample_jobs_once(pool: asyncpg.Pool, metrics: Metrics) -> int:
    """TimescaleDB's job statistics (compression, retention) as gauges; jobs seen."""
    async with pool.acquire() as conn:
        stats = await timescale.job_stats(conn)
    gauges = (
        metrics.timescale_job_last_run_ok,
        metrics.timescale_job_failures,
        metrics.timescale_job_runs,
        metrics.timescale_job_success_age,
    )
    for gauge in gauges:  # a removed job must not linger as a stale series
        gauge.clear()
    for stat in stats:
        labels = (str(stat.job_id), stat.proc, stat.hypertable)
        if stat.last_run_ok is not None:
            metrics.timescale_job_last_run_ok.labels(*labels).set(1 if stat.last_run_ok else 0)
        metrics.timescale_job_failures.labels(*labels).set(stat.total_failures)
        metrics.timescale_job_runs.labels(*labels).set(stat.total_runs)
        if stat.last_success_age_s is not None:
            metrics.timescale_job_success_age.labels(*labels).set(stat.last_success_age_s)
    metrics.timescale_jobs_sampled.set(time.time())
    return len(stats)


async def run_jobs_sampler(pool: asyncpg.Pool, metrics: Metrics, interval_s: float) -> None:
    """`sample_jobs_once` every `interval_s`; a failed read is logged, never fatal."""
    while True:
        try:
            await sample_jobs_once(pool, metrics)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            log.warning("timescale_jobs_unreadable", error=str(exc)[:300])
        await asyncio.sleep(interval_s)

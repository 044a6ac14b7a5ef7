"""Periodic gauges read from Redis and the pool: sampled, never per entry."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import structlog
from redis.exceptions import RedisError

from processor.observability.metrics import Metrics
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

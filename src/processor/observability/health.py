"""Liveness and readiness, as the HTTP endpoints and `processor status` report them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import asyncpg
import redis.asyncio as aioredis

_PROBE_TIMEOUT_S = 2.0


@dataclass
class Readiness:
    ready: bool
    checks: dict[str, str] = field(default_factory=dict)


class HealthProbe:
    """Checks PostgreSQL and Redis with short timeouts, and that the loop makes progress."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: aioredis.Redis,
        last_progress: Callable[[], float],
        loop_running: Callable[[], bool],
        stall_s: float,
        reports: Mapping[str, Callable[[], str]] | None = None,
    ) -> None:
        self.pool = pool
        self.redis = redis
        self.last_progress = last_progress
        self.loop_running = loop_running
        self.stall_s = stall_s
        # Parts reported beside the core's checks (the dispatcher): they make the
        # process unready only when they are not running at all; a Directus outage is
        # reported, not a reason to stop routing to a processor that stores fine.
        self.reports = dict(reports or {})

    async def readiness(self) -> Readiness:
        postgres, redis = await asyncio.gather(self._postgres(), self._redis())
        stalled_for = time.monotonic() - self.last_progress()
        if not self.loop_running():
            consumer = "not running"
        elif stalled_for > self.stall_s:
            consumer = f"no progress for {stalled_for:.0f} s"
        else:
            consumer = "ok"
        checks = {"postgres": postgres, "redis": redis, "consumer": consumer}
        ready = all(v == "ok" for v in checks.values())
        for name, report in self.reports.items():
            checks[name] = report()
            ready = ready and checks[name] != "not running"
        return Readiness(ready, checks)

    async def _postgres(self) -> str:
        try:
            async with asyncio.timeout(_PROBE_TIMEOUT_S):
                conn = await self.pool.acquire()
                try:
                    await conn.fetchval("SELECT 1")
                finally:
                    await self.pool.release(conn)
        except Exception as exc:  # any failure means not ready; the reason is reported
            return f"error: {type(exc).__name__}"
        return "ok"

    async def _redis(self) -> str:
        try:
            async with asyncio.timeout(_PROBE_TIMEOUT_S):
                await self.redis.ping()
        except Exception as exc:  # any failure means not ready; the reason is reported
            return f"error: {type(exc).__name__}"
        return "ok"

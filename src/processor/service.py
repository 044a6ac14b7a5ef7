"""The lifecycle every long-running command shares (`processor run`, `processor domain`).

Start, in this order: signal handlers (SIGTERM/SIGINT call every `on_stop` callback, and
one that comes before a callback is registered still reaches it), the database (connect
with backoff, migrate, pool), HTTP (metrics and health), background tasks (samplers).
Stop, whatever ended the run (a signal, idle, an error): background tasks cancelled,
HTTP stopped, the pool closed with a deadline, Redis clients closed, signal handlers
removed. Commands supply only their own work.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine, Mapping
from types import TracebackType
from typing import Any, Protocol

import asyncpg
import redis.asyncio as aioredis
import structlog

from processor.core.backoff import Backoff
from processor.core.settings import Settings
from processor.core.tasks import cancel_and_wait
from processor.observability.health import HealthProbe
from processor.observability.http import HttpServer, build_app
from processor.observability.metrics import Metrics
from processor.storage.migrate import MigrationError, Mode, migrate
from processor.storage.pool import close_pool_bounded, create_pool, single_connection
from processor.stream.client import connect

log = structlog.get_logger(__name__)
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class DatabaseRefusedError(Exception):
    """The database cannot be used as configured (a migration error): retrying cannot help."""


async def open_pool(settings: Settings, stop: asyncio.Event) -> tuple[asyncpg.Pool, Mode] | None:
    """Connect (and migrate) with backoff: a database that is still starting is not fatal.

    A schema this release cannot migrate, or TimescaleDB required but unusable, is:
    `DatabaseRefusedError`, with the one-line reason. None: stopped while waiting.
    """
    backoff = Backoff(settings.retry_initial_ms / 1000, settings.retry_max_ms / 1000)
    while not stop.is_set():
        try:
            async with single_connection(
                settings.database_url.get_secret_value(), settings.db_connect_timeout_s
            ) as conn:
                report = await migrate(conn, settings)
            log.info("schema_ready", mode=report.mode, applied=report.applied)
            return await create_pool(settings), report.mode
        except MigrationError as exc:
            log.error("database_refused", error=str(exc))
            raise DatabaseRefusedError(str(exc)) from None
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            delay = backoff.next_delay()
            log.warning("database_unavailable", error=str(exc)[:300], retry_in_s=round(delay, 2))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
    return None


class Loop(Protocol):
    """What readiness asks of the command's main loop."""

    @property
    def running(self) -> bool: ...

    @property
    def last_progress(self) -> float: ...


class Service:
    """One command's resources and their order of start and stop (`async with`)."""

    def __init__(self, name: str, settings: Settings, metrics: Metrics) -> None:
        self.name = name
        self.settings = settings
        self.metrics = metrics
        self.stopped = asyncio.Event()
        self.pool: asyncpg.Pool | None = None
        self.mode: Mode | None = None
        self._on_stop: list[Callable[[], None]] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._redis: list[aioredis.Redis] = []
        self._server: HttpServer | None = None

    async def __aenter__(self) -> Service:
        loop = asyncio.get_running_loop()
        for sig in _SIGNALS:
            loop.add_signal_handler(sig, self._signalled, sig.name)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await cancel_and_wait(self._tasks)  # a single cancel() can be lost on Python 3.11
        if self._server is not None:
            await self._server.stop()
        if self.pool is not None:
            await close_pool_bounded(self.pool)
        for client in self._redis:
            with contextlib.suppress(Exception):
                await client.aclose()
        loop = asyncio.get_running_loop()
        for sig in _SIGNALS:
            loop.remove_signal_handler(sig)

    # -- stopping ------------------------------------------------------------------

    def _signalled(self, name: str) -> None:
        log.info("shutdown_requested", signal=name, service=self.name)
        self.stop()

    def stop(self) -> None:
        self.stopped.set()
        for callback in self._on_stop:
            callback()

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Call `callback` on SIGTERM/SIGINT (at once if one came already)."""
        self._on_stop.append(callback)
        if self.stopped.is_set():
            callback()

    # -- resources -----------------------------------------------------------------

    def redis(self, settings: Settings) -> aioredis.Redis:
        """A Redis client closed with the service."""
        client = connect(settings)
        self._redis.append(client)
        return client

    async def open_database(self, settings: Settings | None = None) -> asyncpg.Pool | None:
        """Migrate and open the pool (`open_pool`); None if stopped while waiting.
        Raises `DatabaseRefusedError`."""
        opened = await open_pool(settings or self.settings, self.stopped)
        if opened is None:
            return None
        self.pool, self.mode = opened
        return self.pool

    async def serve_http(
        self,
        redis: aioredis.Redis,
        loop: Loop,
        reports: Mapping[str, Callable[[], str]] | None = None,
    ) -> bool:
        """`/metrics`, `/healthz`, `/readyz` (the database, Redis and `loop` making
        progress) when enabled; False if the port is taken."""
        s = self.settings
        if not s.http_enabled:
            return True
        assert self.pool is not None, "open_database first"
        probe = HealthProbe(
            self.pool,
            redis,
            last_progress=lambda: loop.last_progress,
            loop_running=lambda: loop.running,
            stall_s=s.ready_stall_s,
            reports=reports,
        )
        server = HttpServer(build_app(self.metrics, probe), s.http_host, s.http_port)
        try:
            port = await server.start()
        except OSError as exc:
            log.error(
                "http_unavailable",
                host=s.http_host,
                port=s.http_port,
                error=str(exc),
                hint="set another PROCESSOR_HTTP_PORT (or PROCESSOR_HTTP_ENABLED=false)"
                " next to another processor command on the same host",
            )
            return False
        self._server = server
        log.info("http_listening", host=s.http_host, port=port)
        return True

    def background(self, work: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """A task that runs as long as the service (samplers), cancelled at stop."""
        task = asyncio.create_task(work, name=name)
        self._tasks.append(task)
        return task

"""`processor gateway`: the lifecycle of one gateway process.

Start: signals, PostgreSQL (a small read-only pool, retried while the database is
starting; no migration: the gateway owns no table), Redis, the roster, the feeds, the
interval tick, then HTTP. Stop (SIGTERM/SIGINT): every connection is closed with 1001
("going away") so clients reconnect, to this gateway's successor or another one, and
resume from their last sequence number; then the tasks, the pool and Redis.
Gateways share nothing but Redis (and read PostgreSQL): run as many as needed behind
a load balancer.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time

import asyncpg
import structlog

from processor.core.backoff import Backoff
from processor.core.settings import Settings
from processor.core.tasks import cancel_and_wait
from processor.gateway.feeds import Feeds
from processor.gateway.hub import Hub
from processor.gateway.metrics import GatewayMetrics
from processor.gateway.server import Gateway, GatewayConfig
from processor.observability.http import HttpServer
from processor.stream.client import connect

log = structlog.get_logger(__name__)
ROSTER_REFRESH_S = 15.0
STATEMENT_TIMEOUT_MS = 5_000


async def open_read_pool(settings: Settings, stop: asyncio.Event) -> asyncpg.Pool | None:
    backoff = Backoff(settings.retry_initial_ms / 1000, settings.retry_max_ms / 1000)
    while not stop.is_set():
        try:
            pool: asyncpg.Pool = await asyncpg.create_pool(
                settings.database_url.get_secret_value(),
                min_size=1,
                max_size=4,
                timeout=settings.db_connect_timeout_s,
                command_timeout=STATEMENT_TIMEOUT_MS / 1000 + 2,
                server_settings={
                    "application_name": "processor-gateway",
                    "statement_timeout": str(STATEMENT_TIMEOUT_MS),
                    "default_transaction_read_only": "on",
                },
            )
            return pool
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            delay = backoff.next_delay()
            log.warning("database_unavailable", error=str(exc)[:300], retry_in_s=round(delay, 2))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
    return None


class GatewayService:
    """One gateway's resources, started in order and stopped in reverse (`async with`);
    `port` is the bound port. `run_gateway` is this plus signals."""

    def __init__(self, settings: Settings, *, port: int | None = None) -> None:
        self.settings = settings
        self.requested_port = settings.gateway_port if port is None else port
        self.metrics = GatewayMetrics()
        self.port = 0
        self.hub: Hub | None = None
        self.gateway: Gateway | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self._redis = connect(settings)
        self._pool: asyncpg.Pool | None = None
        self._server: HttpServer | None = None

    async def start(self, stop: asyncio.Event) -> bool:
        """False when stopped while waiting for the database."""
        s = self.settings
        self._pool = await open_read_pool(s, stop)
        if self._pool is None:
            return False
        hub = self.hub = Hub(
            self.metrics,
            self._pool,
            self._redis,
            live_key=s.live_key,
            max_devices=s.gateway_max_devices,
            queue_limit=s.gateway_client_queue,
        )
        await hub.refresh_roster()
        feeds = Feeds(
            self._redis, hub, self.metrics, positions_stream=s.stream, live_stream=s.live_key
        )
        ticker = _Ticker(hub, s.gateway_interval_ms / 1000)

        def ready() -> dict[str, str]:
            now = time.monotonic()
            fresh = feeds.running and now - feeds.last_progress < s.ready_stall_s
            return {
                "feeds": "ok" if fresh else "stalled",
                "tick": "ok" if now - ticker.last < s.ready_stall_s else "stalled",
            }

        config = GatewayConfig(
            race_control_token=s.gateway_race_control_token.get_secret_value(),
            public_token=s.gateway_public_token.get_secret_value(),
            max_clients=s.gateway_max_clients,
            queue_limit=s.gateway_client_queue,
            interval_ms=s.gateway_interval_ms,
            directus_url=s.gateway_directus_url or s.directus_url,
        )
        self.gateway = Gateway(hub, self.metrics, config, ready)
        self.tasks = [
            asyncio.create_task(feeds.run(), name="gateway-feeds"),
            asyncio.create_task(ticker.run(), name="gateway-tick"),
            asyncio.create_task(_refresh(hub), name="gateway-roster"),
        ]
        self._server = HttpServer(self.gateway.app(), s.gateway_host, self.requested_port)
        self.port = await self._server.start()
        return True

    async def close(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()  # pumps end, handlers close their connections with 1001
        if self._server is not None:
            await self._server.stop()
        await cancel_and_wait(self.tasks)
        if self._pool is not None:
            await self._pool.close()
        await self._redis.aclose()

    async def __aenter__(self) -> GatewayService:
        if not await self.start(asyncio.Event()):
            raise RuntimeError("gateway stopped before it started")
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()


async def run_gateway(settings: Settings, *, port: int | None = None) -> int:
    """Serve until SIGTERM/SIGINT; the exit code."""
    s = settings
    if not s.gateway_race_control_token.get_secret_value():
        log.warning(
            "gateway_no_race_control_token", hint="set PROCESSOR_GATEWAY_RACE_CONTROL_TOKEN"
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    service = GatewayService(s, port=port)
    try:
        try:
            if not await service.start(stop):
                return 0
        except OSError as exc:
            log.error("gateway_port_unavailable", port=service.requested_port, error=str(exc))
            return 2
        log.info(
            "gateway_listening",
            host=s.gateway_host,
            port=service.port,
            stream=s.stream,
            live=s.live_key,
            page=f"http://{s.gateway_host}:{service.port}/",
        )
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({stopped, *service.tasks}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        for task in service.tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("gateway_task_failed", task=task.get_name(), error=str(task.exception()))
                return 1
        assert service.hub is not None
        log.info("gateway_stopping", clients=service.hub.client_count)
        return 0
    finally:
        await service.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


class _Ticker:
    """The interval: coalesced positions and changed boards out (`Hub.tick`)."""

    def __init__(self, hub: Hub, interval_s: float) -> None:
        self.hub = hub
        self.interval_s = interval_s
        self.last = time.monotonic()

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.hub.tick()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("gateway_tick_failed", error=str(exc)[:300])
            self.last = time.monotonic()
            await asyncio.sleep(max(0.0, self.interval_s - (self.last - started)))


async def _refresh(hub: Hub) -> None:
    while True:
        await asyncio.sleep(ROSTER_REFRESH_S)
        try:
            await hub.refresh_roster()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("gateway_roster_failed", error=str(exc)[:300])

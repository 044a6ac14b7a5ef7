"""The gateway's HTTP surface: `/ws` (WebSocket), `/sse` (Server-Sent Events), the
race-control page (`/`, `static/`), `/config.json` for the page, and `/metrics`,
`/healthz`, `/readyz` like every other processor command.

Both transports take the same query: `token` (or `Authorization: Bearer`), `event` or
`stage`, optionally `entry` / `device` filters, and `since` (the last sequence number
the client has; SSE's `Last-Event-ID` header is the same). Each connection is served by
its own task (`Hub.pump`); the handler only authenticates, subscribes and waits.

Invariant: a connection is refused before anything is written to it when its token or
its subscription is not valid; refusals never say which token exists.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import msgspec
import structlog
from aiohttp import WSCloseCode, web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from processor.gateway.clients import Client, Outgoing
from processor.gateway.hub import Hub
from processor.gateway.metrics import GatewayMetrics
from processor.gateway.scope import (
    Scope,
    Subscription,
    SubscriptionError,
    authorise,
    bearer,
    parse_subscription,
)
from processor.gateway.visibility import resolve

log = structlog.get_logger(__name__)
STATIC = Path(str(resources.files("processor.gateway") / "static"))


class GatewayConfig(msgspec.Struct, frozen=True):
    race_control_token: str
    public_token: str
    max_clients: int
    queue_limit: int
    interval_ms: int
    directus_url: str  # what the page's acknowledge calls (the browser's view of Directus)


class Gateway:
    """The routes, over one hub; `stop()` ends every connection (close code 1001)."""

    def __init__(
        self,
        hub: Hub,
        metrics: GatewayMetrics,
        config: GatewayConfig,
        ready: Callable[[], dict[str, str]],
    ) -> None:
        self.hub = hub
        self.metrics = metrics
        self.config = config
        self.ready = ready
        self.stopping = asyncio.Event()

    def stop(self) -> None:
        self.stopping.set()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self.page)
        app.router.add_get("/public", self.page)
        app.router.add_get("/config.json", self.page_config)
        app.router.add_static("/static/", STATIC, show_index=False)
        app.router.add_get("/ws", self.websocket)
        app.router.add_get("/sse", self.sse)
        app.router.add_get("/check", self.check)
        app.router.add_get("/metrics", self.metrics_view)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        return app

    # -- the page and probes -------------------------------------------------------

    async def page(self, _: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    async def page_config(self, _: web.Request) -> web.Response:
        return web.json_response(
            {"directus_url": self.config.directus_url, "interval_ms": self.config.interval_ms}
        )

    async def metrics_view(self, _: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(self, _: web.Request) -> web.Response:
        checks = self.ready()
        ok = all(v == "ok" for v in checks.values())
        return web.json_response({"ready": ok, "checks": checks}, status=200 if ok else 503)

    # -- subscribing ---------------------------------------------------------------

    async def _client(self, request: web.Request, transport: str) -> Client | web.Response:
        c = self.config
        token = bearer(request.headers.get("Authorization"), request.query.get("token"))
        scope = authorise(token, race_control=c.race_control_token, public=c.public_token)
        if scope is None:
            self.metrics.refused.labels("unauthorized").inc()
            return _error(401, "unauthorized")
        if self.hub.client_count >= c.max_clients:
            self.metrics.refused.labels("full").inc()
            return _error(503, "this gateway is full: try another")
        try:
            sub = await self._resolve(parse_subscription(request.query, scope), scope)
        except SubscriptionError as exc:
            self.metrics.refused.labels("subscription").inc()
            return _error(404 if str(exc).startswith("no ") else 400, str(exc))
        return Client(scope, sub, transport, c.queue_limit)

    async def _resolve(self, sub: Subscription, scope: Scope) -> Subscription:
        try:
            return resolve(sub, scope, self.hub.roster)
        except SubscriptionError:  # perhaps created since the last refresh
            await self.hub.refresh_roster()
            return resolve(sub, scope, self.hub.roster)

    async def check(self, request: web.Request) -> web.Response:
        """What `/ws` would answer, without subscribing (a browser cannot read why a
        WebSocket was refused)."""
        client = await self._client(request, "check")
        if isinstance(client, web.Response):
            return client
        return web.json_response({"scope": client.scope.value, "event": client.sub.event})

    # -- transports ----------------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        client = await self._client(request, "websocket")
        if isinstance(client, web.Response):
            return client
        ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=64 * 1024)
        await ws.prepare(request)

        async def send(message: Outgoing) -> None:
            await ws.send_str(message.body.decode())

        start = await self.hub.start(client, request.query.get("since") or None)
        self.metrics.connections.labels(client.scope.value, start).inc()
        pump = asyncio.create_task(self.hub.pump(client, send, self.stopping), name="ws-pump")
        reader = asyncio.create_task(_drain(ws), name="ws-reader")
        try:
            await asyncio.wait({pump, reader}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, reader):
                task.cancel()
            await asyncio.gather(pump, reader, return_exceptions=True)
            self.hub.remove(client)
            code = WSCloseCode.GOING_AWAY if self.stopping.is_set() else WSCloseCode.OK
            with contextlib.suppress(Exception):
                await ws.close(code=code)
        return ws

    async def sse(self, request: web.Request) -> web.StreamResponse:
        client = await self._client(request, "sse")
        if isinstance(client, web.Response):
            return client
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await resp.prepare(request)

        async def send(message: Outgoing) -> None:
            head = f"id: {message.seq}\n" if message.seq else ""
            await resp.write(
                f"{head}event: {message.type}\ndata: ".encode() + message.body + b"\n\n"
            )

        since = request.headers.get("Last-Event-ID") or request.query.get("since") or None
        start = await self.hub.start(client, since)
        self.metrics.connections.labels(client.scope.value, start).inc()
        try:
            await self.hub.pump(client, send, self.stopping)
        except ConnectionError:  # the client went away
            pass
        finally:
            self.hub.remove(client)
        return resp


async def _drain(ws: web.WebSocketResponse) -> None:
    """Read until the client closes (clients send nothing the gateway needs)."""
    async for _ in ws:
        pass


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)

"""`/metrics`, `/healthz` and `/readyz` on a small aiohttp server."""

from __future__ import annotations

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from processor.observability.health import HealthProbe
from processor.observability.metrics import Metrics


def build_app(metrics: Metrics, probe: HealthProbe | None) -> web.Application:
    async def metrics_view(_: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(_: web.Request) -> web.Response:
        if probe is None:
            return web.json_response({"ready": False, "checks": {}}, status=503)
        readiness = await probe.readiness()
        body = msgspec.json.encode({"ready": readiness.ready, "checks": readiness.checks})
        return web.Response(
            body=body, status=200 if readiness.ready else 503, content_type="application/json"
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


class HttpServer:
    """Explicit start/stop around aiohttp's runner."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self.runner = web.AppRunner(app, access_log=None)
        self.host = host
        self.port = port

    async def start(self) -> int:
        """Bind and serve; returns the bound port (useful with port 0)."""
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self.port)
        await site.start()
        # aiohttp has no public accessor for the bound socket (needed with port 0).
        sockets = getattr(site._server, "sockets", None)
        return int(sockets[0].getsockname()[1]) if sockets else self.port

    async def stop(self) -> None:
        await self.runner.cleanup()

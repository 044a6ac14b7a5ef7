"""A stand-in for Directus's `POST /items/processor_events`, for the dispatcher's own
tests (the real Directus is exercised end to end in test_directus_live.py): a unique
`event_key`, batches created in one transaction, and switches to fail like an outage."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class FakeDirectus:
    token: str = "dispatcher-token"
    items: list[dict[str, Any]] = field(default_factory=list)
    status: int | None = None  # answer every request with this status (an outage)
    delay_s: float = 0.0  # before answering each request (a slow Directus)
    # A batch bigger than this is stored, then answered only after `slow_s` (a loaded
    # Directus that finishes a request its client has given up on).
    slow_above: int | None = None
    slow_s: float = 0.0
    requests: int = 0
    _runner: web.AppRunner | None = None
    url: str = ""

    @property
    def keys(self) -> set[str]:
        return {i["event_key"] for i in self.items}

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/items/processor_events", self._create)
        app.router.add_get("/items/processor_events", self._read)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _create(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.status is not None:
            return web.json_response({"errors": [{"message": "down"}]}, status=self.status)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"errors": [{"message": "forbidden"}]}, status=403)
        body = json.loads(await request.text())
        batch = body if isinstance(body, list) else [body]
        keys = [i["event_key"] for i in batch]
        if len(set(keys)) != len(keys) or self.keys & set(keys):
            error = {"message": "unique", "extensions": {"code": "RECORD_NOT_UNIQUE"}}
            return web.json_response({"errors": [error]}, status=400)
        start = len(self.items)
        self.items += batch
        if self.slow_above is not None and len(batch) > self.slow_above:
            await asyncio.sleep(self.slow_s)
        ids = [{"id": n} for n in range(start + 1, len(self.items) + 1)]
        return web.json_response({"data": ids if isinstance(body, list) else ids[0]})

    async def _read(self, request: web.Request) -> web.Response:
        """`?filter={"event_key":{"_in":[…]}}&fields=event_key`, as the dispatcher asks."""
        self.requests += 1
        if self.status is not None:
            return web.json_response({"errors": [{"message": "down"}]}, status=self.status)
        wanted = set(json.loads(request.query["filter"])["event_key"]["_in"])
        return web.json_response({"data": [{"event_key": k} for k in wanted & self.keys]})


@contextlib.contextmanager
def fake_directus_thread(**options: Any) -> Iterator[FakeDirectus]:
    """A `FakeDirectus` on an event loop of its own thread, for synchronous tests that
    run the processor as child processes (tests/faults)."""
    fake = FakeDirectus(**options)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(fake.start(), loop).result(30)
    try:
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()

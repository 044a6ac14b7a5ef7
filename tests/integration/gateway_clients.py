"""WebSocket and SSE clients of `processor gateway` for the tests: every message kept."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp


class Client:
    """Reads one connection into `messages` (and `raw`, the text as received)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.closed: int | None = None  # the WebSocket close code
        self.last_event_id: str | None = None
        self._task: asyncio.Task[None] | None = None

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == kind]

    def _keep(self, text: str) -> None:
        self.raw.append(text)
        self.messages.append(json.loads(text))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


class WsClient(Client):
    async def connect(self, session: aiohttp.ClientSession, url: str) -> None:
        self.ws = await session.ws_connect(url)
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self._keep(msg.data)
        self.closed = self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()
        await super().close()


class SseClient(Client):
    async def connect(
        self, session: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
    ) -> None:
        self.resp = await session.get(url, headers=headers or {})
        assert self.resp.status == 200, await self.resp.text()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        data: list[str] = []
        async for line in self.resp.content:
            text = line.decode().rstrip("\n")
            if text.startswith("id: "):
                self.last_event_id = text[4:]
            elif text.startswith("data: "):
                data.append(text[6:])
            elif text == "" and data:
                self._keep("\n".join(data))
                data = []

    async def close(self) -> None:
        self.resp.close()
        await super().close()


async def until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)

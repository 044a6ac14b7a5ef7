"""A race-control client of Directus: a WebSocket subscription to `processor_events`
creations, resynchronised over REST after every (re)connection, as a real client must be
(Directus does not replay what was created while a client was away). Used by the
end-to-end test and by bench/directus_delivery.py.

Invariant: `items` holds each item once (by Directus id), `received_at` when it first
arrived, whichever way; `errors` every refusal seen (an auth failure, a failed resync).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import aiohttp


class Subscriber:
    """A race-control client: a WebSocket subscription to `processor_events` creations,
    resynchronised over REST after every (re)connection, as a real client must be (items
    created while it was away are not replayed by Directus)."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.token = token
        self.items: dict[int, dict[str, Any]] = {}
        self.received_at: dict[int, float] = {}
        self.via_ws: dict[int, bool] = {}  # arrived by WebSocket (not by a resync)
        self.by_websocket = 0
        self.connections = 0
        self.errors: list[str] = []

    def payloads(self) -> list[dict[str, Any]]:
        return [self.items[i]["payload"] for i in sorted(self.items)]

    def _take(self, item: dict[str, Any], via_ws: bool) -> None:
        if item["id"] in self.items:
            return
        if isinstance(item["payload"], str):
            item["payload"] = json.loads(item["payload"])
        self.items[item["id"]] = item
        self.received_at[item["id"]] = time.time()
        self.via_ws[item["id"]] = via_ws
        self.by_websocket += via_ws

    async def run(self) -> None:
        async with aiohttp.ClientSession() as http:
            while True:
                with contextlib.suppress(aiohttp.ClientError, OSError, ConnectionError):
                    await self._session(http)
                await asyncio.sleep(0.5)

    async def _session(self, http: aiohttp.ClientSession) -> None:
        ws_url = self.base_url.replace("http", "ws", 1) + "/websocket"
        async with http.ws_connect(ws_url, heartbeat=None) as ws:
            await ws.send_json({"type": "auth", "access_token": self.token})
            auth = await ws.receive_json(timeout=10)
            if auth.get("status") != "ok":
                self.errors.append(str(auth))
                return
            await ws.send_json(
                {
                    "type": "subscribe",
                    "collection": "processor_events",
                    "event": "create",
                    "query": {"fields": ["*"]},
                    "uid": "race",
                }
            )
            self.connections += 1
            await self._resync(http)
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                doc = json.loads(msg.data)
                if doc.get("type") == "ping":
                    await ws.send_json({"type": "pong"})
                elif doc.get("type") == "subscription" and doc.get("event") == "create":
                    for item in doc["data"]:
                        self._take(item, via_ws=True)

    async def _resync(self, http: aiohttp.ClientSession) -> None:
        last = max(self.items, default=0)
        async with http.get(
            f"{self.base_url}/items/processor_events",
            params={"filter[id][_gt]": str(last), "sort": "id", "limit": "-1"},
            headers={"Authorization": f"Bearer {self.token}"},
        ) as resp:
            if resp.status != 200:
                self.errors.append(f"resync: HTTP {resp.status} {await resp.text()}")
                raise ConnectionError("resync failed")
            for item in (await resp.json())["data"]:
                self._take(item, via_ws=False)

"""Directus's REST API as the dispatcher needs it: create `processor_events` items.

Invariant: an answer is either "stored" (every item, or every item not already there
by its `event_key`) or a `DeliveryError` naming why, which the caller retries; nothing
is ever reported stored that Directus did not confirm.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiohttp
import msgspec


class DeliveryError(Exception):
    """Directus did not store the items; `reason` is the metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class DirectusClient:
    """A session on one Directus with a static token (the dispatcher role's)."""

    COLLECTION = "processor_events"

    def __init__(self, base_url: str, token: str, timeout_s: float) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self._headers, timeout=self._timeout, json_serialize=_json
            )
        return self._session

    async def create(self, items: Sequence[dict[str, Any]]) -> int:
        """Create `items` (one request); the number that were already there. Directus
        creates a batch in one transaction, so a batch holding an item delivered before
        (a crash between delivering and recording it) is retried item by item."""
        if not items:
            return 0
        try:
            await self._post(list(items))
            return 0
        except _NotUniqueError:
            if len(items) == 1:
                return 1
        already = 0
        for item in items:
            try:
                await self._post(item)
            except _NotUniqueError:
                already += 1
        return already

    async def _post(self, body: Any) -> None:
        url = f"{self.base_url}/items/{self.COLLECTION}"
        try:
            async with self._http().post(url, data=_json(body), params={"fields": "id"}) as resp:
                if resp.status in (200, 204):
                    return
                text = await resp.text()
                if resp.status == 400 and "RECORD_NOT_UNIQUE" in text:
                    raise _NotUniqueError
                raise DeliveryError(_reason(resp.status), f"HTTP {resp.status}: {text[:300]}")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise DeliveryError("unreachable", f"{type(exc).__name__}: {exc}"[:300]) from None


class _NotUniqueError(Exception):
    """An item with this `event_key` exists: it was delivered before."""


def _reason(status: int) -> str:
    if status in (401, 403):
        return "unauthorized"
    if status == 429 or status >= 500:
        return "unavailable"
    return "rejected"


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()

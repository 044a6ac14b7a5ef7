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
        (a crash, or a timed-out request Directus finished anyway) is refused whole: the
        keys already there are then looked up and the rest sent again."""
        pending = list(items)
        already = 0
        for _ in range(3):
            if not pending:
                return already
            try:
                await self._post(pending)
                return already
            except _NotUniqueError:
                there = await self._existing([i["event_key"] for i in pending])
                already += sum(1 for i in pending if i["event_key"] in there)
                pending = [i for i in pending if i["event_key"] not in there]
        for item in pending:  # still refused: someone else is delivering the same keys
            try:
                await self._post(item)
            except _NotUniqueError:
                already += 1
        return already

    async def _existing(self, keys: list[str]) -> set[str]:
        """Which of `keys` Directus holds (the dispatcher role may read `event_key`)."""
        found: set[str] = set()
        url = f"{self.base_url}/items/{self.COLLECTION}"
        for start in range(0, len(keys), 100):
            chunk = keys[start : start + 100]
            query = {
                "filter": _json({"event_key": {"_in": chunk}}),
                "fields": "event_key",
                "limit": str(len(chunk)),
            }
            try:
                async with self._http().get(url, params=query) as resp:
                    text = await resp.text()
                    if resp.status != 200:
                        raise DeliveryError(
                            _reason(resp.status), f"HTTP {resp.status}: {text[:300]}"
                        )
                    found |= {row["event_key"] for row in msgspec.json.decode(text)["data"]}
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise DeliveryError("unreachable", f"{type(exc).__name__}: {exc}"[:300]) from None
        return found

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

"""Directus's REST API as an administrator sees it, for applying access and Flows.

One aiohttp session with a static admin token (a SecretStr until the header is built).
Answers are Directus's `data`; an error answer becomes a `DirectusError` carrying Directus's
own code and message (never the request body, which may hold a token).

Invariant: nothing here retries or interprets: the caller decides what an error means.
"""

from __future__ import annotations

import json
from types import TracebackType
from typing import Any

import aiohttp
from pydantic import SecretStr


class DirectusError(Exception):
    """A request Directus refused or could not be sent: `status` 0 means no answer."""

    def __init__(self, method: str, path: str, status: int, code: str, message: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status} {code}: {message}".rstrip(": "))
        self.status = status
        self.code = code
        self.message = message


class AdminClient:
    """`async with AdminClient(url, token) as client: await client.get("/roles")`."""

    def __init__(self, base_url: str, token: SecretStr, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AdminClient:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get(self, path: str, **query: Any) -> Any:
        """GET `path`; `filter` and other structured parameters are sent as JSON."""
        params = {k: v if isinstance(v, str) else json.dumps(v) for k, v in query.items()}
        return await self.send("GET", path, params=params)

    async def send(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, str] | None = None,
        token: SecretStr | None = None,
    ) -> Any:
        """One request as the admin (or as `token`); Directus's `data`, None when empty."""
        if self._session is None:
            raise RuntimeError("AdminClient is used outside `async with`")
        secret = (token or self._token).get_secret_value()
        headers = {"Authorization": f"Bearer {secret}"}
        try:
            async with self._session.request(
                method,
                f"{self.base_url}{path}",
                json=body,
                params=params,
                headers=headers,
            ) as response:
                text = await response.text()
                if response.status >= 400:
                    code, message = _error(text)
                    raise DirectusError(method, path, response.status, code, message)
                if not text:
                    return None
                return json.loads(text).get("data")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            detail = str(exc) or type(exc).__name__
            raise DirectusError(method, path, 0, "UNREACHABLE", detail) from None

    async def whoami(self, token: SecretStr) -> str | None:
        """The id of the user `token` authenticates as; None when Directus refuses it."""
        try:
            data = await self.send("GET", "/users/me", params={"fields": "id"}, token=token)
        except DirectusError as exc:
            if exc.status in (401, 403):
                return None
            raise
        return None if data is None else str(data.get("id"))


def _error(text: str) -> tuple[str, str]:
    """(Directus's error code, its message) from an error answer."""
    try:
        first = json.loads(text)["errors"][0]
        return str(first.get("extensions", {}).get("code", "")), str(first.get("message", ""))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return "", text[:200]

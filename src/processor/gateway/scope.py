"""Who a client is (its scope, from its token) and what it asked for (its subscription).

Two scopes: race control (crews, devices, alerts, device health) and public (published
events only, no device identifiers, no alerts). A token is compared in constant time.
With no public token configured the public scope is open: spectators need none.

Invariant: a client gets the race-control scope only by presenting the race-control
token; a presented token that matches neither scope is refused, never downgraded.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

_MAX_FILTER = 500  # ids in one subscription filter


class Scope(StrEnum):
    RACE_CONTROL = "race_control"
    PUBLIC = "public"


def authorise(presented: str | None, *, race_control: str, public: str) -> Scope | None:
    """The scope `presented` grants, or None (refused)."""
    if presented:
        if race_control and hmac.compare_digest(presented.encode(), race_control.encode()):
            return Scope.RACE_CONTROL
        if public and hmac.compare_digest(presented.encode(), public.encode()):
            return Scope.PUBLIC
        return None
    return None if public else Scope.PUBLIC


def bearer(authorization: str | None, query_token: str | None) -> str | None:
    """The token of a request: `Authorization: Bearer …`, else `?token=` (browsers cannot
    set headers on WebSocket and EventSource connections)."""
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip() or None
    return query_token or None


class SubscriptionError(ValueError):
    """A subscription that cannot be served (the message says why)."""


@dataclass(frozen=True)
class Subscription:
    """What a client follows: an event, or one stage of it; optionally only some entries
    (by entry id) or, for race control, some devices (by IMEI)."""

    event: int | None = None
    stage: int | None = None
    entries: frozenset[int] = frozenset()
    devices: frozenset[str] = frozenset()

    def key(self) -> tuple[object, ...]:
        """Clients with equal keys (and scope) see the same messages: encoded once."""
        return (self.event, self.stage, tuple(sorted(self.entries)), tuple(sorted(self.devices)))


def parse_subscription(query: Mapping[str, str], scope: Scope) -> Subscription:
    """`?event=1&stage=2&entry=3,4&device=IMEI,…` → a subscription (stage or event needed)."""
    event = _int(query.get("event"), "event")
    stage = _int(query.get("stage"), "stage")
    if event is None and stage is None:
        raise SubscriptionError("give event=<id> or stage=<id>")
    entries = frozenset(_int(v, "entry") or 0 for v in _list(query.get("entry")))
    devices = frozenset(_list(query.get("device")))
    if devices and scope is not Scope.RACE_CONTROL:
        raise SubscriptionError("device filters need the race-control scope")
    if len(entries) > _MAX_FILTER or len(devices) > _MAX_FILTER:
        raise SubscriptionError(f"at most {_MAX_FILTER} entries or devices")
    return Subscription(event, stage, entries, devices)


def _list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _int(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except ValueError:
        raise SubscriptionError(f"{name} must be an integer id") from None
    if number <= 0:
        raise SubscriptionError(f"{name} must be a positive id")
    return number

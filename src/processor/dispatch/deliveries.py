"""What to send for a run of outbox events: one delivery per row, its newest state.

Invariant: for every row the deliveries keep the order of its versions (outbox ids),
and the delivery for a row is its newest event in the run, so a subscriber that applies
deliveries in order ends on the row's state. A row first announced in the run is
announced as created; one deleted at the end of the run as deleted, even when it was
created in the run (its creation may have reached Directus before a crash). Subscribers
treat created and updated alike, as "the row is now this" at a version. Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class OutboxEvent:
    """One outbox row as the dispatcher reads it."""

    id: int
    collection: str
    row_key: str
    change: str
    kind: str
    payload: str  # JSON text
    created_at: datetime
    event_key: str | None = None  # only on rows written before versions existed


@dataclass(frozen=True)
class Delivery:
    """One `processor_events` item: the newest event of a row, and the ids it covers."""

    event: OutboxEvent
    change: str
    covers: tuple[int, ...]

    @property
    def version(self) -> int:
        return self.event.id

    @property
    def event_key(self) -> str:
        """Directus's idempotency key: a retried delivery of this version is refused."""
        e = self.event
        return e.event_key or f"{e.collection}:{e.row_key}:{e.id}"

    def item(self) -> dict[str, Any]:
        payload = json.loads(self.event.payload)
        payload["change"] = self.change
        payload["version"] = self.version
        prefix = self.event.kind.split(".", 1)[0]
        return {
            "event_key": self.event_key,
            "kind": f"{prefix}.{self.change}",
            "payload": payload,
            "created_at": self.event.created_at.isoformat(),
        }


@dataclass(frozen=True)
class Plan:
    deliveries: list[Delivery]  # in version order
    ids: list[int]  # every event read: all are done once the deliveries are

    @property
    def coalesced(self) -> int:
        return len(self.ids) - len(self.deliveries)


def plan(events: Iterable[OutboxEvent]) -> Plan:
    """The deliveries for `events` (any order)."""
    by_row: dict[tuple[str, str], list[OutboxEvent]] = {}
    ordered = sorted(events, key=lambda e: e.id)
    for e in ordered:
        by_row.setdefault((e.collection, e.row_key), []).append(e)
    deliveries = []
    for run in by_row.values():
        deliveries.append(Delivery(run[-1], _change(run), tuple(e.id for e in run)))
    deliveries.sort(key=lambda d: d.version)
    return Plan(deliveries, [e.id for e in ordered])


def _change(run: Sequence[OutboxEvent]) -> str:
    first, last = run[0].change, run[-1].change
    return "created" if first == "created" and last != "deleted" else last

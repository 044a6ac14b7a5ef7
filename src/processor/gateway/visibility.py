"""What one client may see of a change or a position: its scope and subscription decide.

Race control sees every collection of its event, devices (IMEI, satellites, receive
time) and alerts. The public sees only events marked public (`events.public`), and of
them results, penalties and timing records without officials' notes or evidence, cars by
entry and number (crew names are published in classifications), never a device id and
never an alert.

Invariant: a message for the public scope never carries an IMEI, an alert, a note, or
anything of an event that is not public; pure functions, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from processor.core.position import Position
from processor.gateway.roster import Roster
from processor.gateway.scope import Scope, Subscription, SubscriptionError

PUBLIC_COLLECTIONS = frozenset({"stage_results", "penalties", "timing_records"})
PRIVATE_FIELDS = frozenset({"note", "details", "fix_before_at", "fix_after_at"})


@dataclass(frozen=True)
class Change:
    """One delivery read from the live stream (`dispatch/live.py`)."""

    seq: str  # the live stream's entry id
    collection: str
    change: str  # created | updated | deleted
    id: int | None  # the Directus id
    version: int
    event: int | None
    stage: int | None
    entry: int | None
    data: dict[str, Any] | None
    created_at: str

    @classmethod
    def from_item(cls, seq: str, item: dict[str, Any]) -> Change:
        p = item.get("payload") or {}
        return cls(
            seq=seq,
            collection=str(p.get("collection", "")),
            change=str(p.get("change", "")),
            id=p.get("id"),
            version=int(p.get("version", 0)),
            event=p.get("event"),
            stage=p.get("stage"),
            entry=p.get("entry"),
            data=p.get("data"),
            created_at=str(item.get("created_at", "")),
        )


def resolve(sub: Subscription, scope: Scope, roster: Roster) -> Subscription:
    """The subscription with its event filled in from its stage; refused when it names
    what does not exist or, for the public, an event that is not public."""
    event = sub.event
    if sub.stage is not None:
        stage = roster.stages.get(sub.stage)
        if stage is None:
            raise SubscriptionError(f"no stage {sub.stage}")
        if event is not None and event != stage.event:
            raise SubscriptionError(f"stage {sub.stage} is not in event {event}")
        event = stage.event
    assert event is not None
    info = roster.events.get(event)
    if info is None or (scope is Scope.PUBLIC and not info.public):
        raise SubscriptionError(f"no event {event}")  # a private event does not exist publicly
    entries = sub.entries | frozenset(
        e.id for d in sub.devices if (e := roster.entry_of_device(d)) is not None
    )
    return Subscription(event, sub.stage, entries, sub.devices)


def change_view(
    change: Change, sub: Subscription, scope: Scope, roster: Roster
) -> dict[str, Any] | None:
    """The message for `change`, or None when this client must not or need not see it.
    `sub` is resolved (`resolve`)."""
    if change.event != sub.event:
        return None
    if scope is Scope.PUBLIC:
        event = roster.events.get(change.event) if change.event is not None else None
        if event is None or not event.public or change.collection not in PUBLIC_COLLECTIONS:
            return None
    if sub.stage is not None and change.stage is not None and change.stage != sub.stage:
        return None
    if (sub.entries or sub.devices) and change.entry not in sub.entries:
        return None
    data = change.data
    if data is not None and scope is Scope.PUBLIC:
        data = {k: v for k, v in data.items() if k not in PRIVATE_FIELDS}
    return {
        "type": "change",
        "seq": change.seq,
        "collection": change.collection,
        "change": change.change,
        "id": change.id,
        "version": change.version,
        "stage": change.stage,
        "entry": change.entry,
        "data": data,
    }


def position_view(
    fix: Position, sub: Subscription, scope: Scope, roster: Roster
) -> tuple[object, dict[str, Any]] | None:
    """(key, item) of a car's fix for this client, or None. The public's key is the entry
    (never the device); race control's is the device."""
    entry = roster.entry_of_device(fix.device_id)
    if scope is Scope.PUBLIC:
        if entry is None or entry.event != sub.event:
            return None
        event = roster.events.get(entry.event)
        if event is None or not event.public:
            return None
    elif entry is None:
        if fix.device_id not in sub.devices:
            return None
    elif entry.event != sub.event:
        return None
    if sub.devices and fix.device_id not in sub.devices:
        return None
    if sub.entries and not sub.devices and (entry is None or entry.id not in sub.entries):
        return None
    item: dict[str, Any] = {
        "entry": entry.id if entry else None,
        "number": entry.number if entry else None,
        "lat": fix.latitude,
        "lon": fix.longitude,
        "speed": fix.speed,
        "heading": fix.heading,
        "ts": fix.ts_ms,
    }
    if scope is Scope.PUBLIC:
        assert entry is not None
        return entry.id, item
    item["device"] = fix.device_id
    item["sats"] = fix.satellites
    item["received"] = fix.received_at_ms
    return fix.device_id, item

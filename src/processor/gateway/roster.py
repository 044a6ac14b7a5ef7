"""The event configuration the gateway needs, as plain data: events (and whether they are
public), stages, entries and the device each entry carries.

Read from PostgreSQL (`queries.read_roster`) at start and every refresh; the rules in
`visibility` use it to map a device to its car and to keep private data private.

Invariant: immutable once built; a refresh replaces the whole roster at once, so a rule
never sees half of an old one and half of a new one.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class EventInfo:
    id: int
    name: str
    public: bool
    timezone: str


@dataclass(frozen=True)
class StageInfo:
    id: int
    event: int
    name: str
    sequence: int


@dataclass(frozen=True)
class EntryInfo:
    id: int
    event: int
    number: int
    crew: str
    entry_class: str | None
    device: str | None  # the tracker's IMEI: race control only


@dataclass(frozen=True)
class Roster:
    events: dict[int, EventInfo] = field(default_factory=dict)
    stages: dict[int, StageInfo] = field(default_factory=dict)
    entries: dict[int, EntryInfo] = field(default_factory=dict)
    by_device: dict[str, EntryInfo] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_device = {e.device: e for e in self.entries.values() if e.device}
        object.__setattr__(self, "by_device", by_device)

    def entry_of_device(self, device: str) -> EntryInfo | None:
        return self.by_device.get(device)

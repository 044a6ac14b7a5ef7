"""The Flows the project ships, as data (Directus keeps Flows in its tables, not in snapshots).

- **Officials' intent** (ADR 0004, ADR 0011): a blocking (filter) Flow on `items.update` of
  timing_records, penalties, stage_results and alerts. Its one operation (a Run Script,
  `officials_intent.js`) returns the payload with `source = 'manual'` when a person edits a
  row, and Directus 10.13 saves what a filter Flow returns. So an official who sets
  `status = rejected` on an automatic finish in the Studio makes it an official's row without
  knowing the rule. Editing only an alert's `status`/`note` keeps the alert automatic.
- **Critical alert → race control** (the example of ADR 0007's integration): an action Flow on
  `items.create` of processor_events (the dispatcher creates one item per change): a critical,
  open alert (`alert.created` or `alert.updated`, the escalation of a stop) sends one Directus
  notification to each active user of the race control role, once per alert.

Invariant: a Flow and each of its operations have ids derived from their keys, so applying
twice updates rather than duplicates; every managed Flow's description ends with `MARKER`, so
a Flow dropped from this declaration is found and deleted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from processor.directus.access import OUTPUTS, RACE_CONTROL, stable_id

MARKER = "[managed by processor directus apply]"


@dataclass(frozen=True)
class Operation:
    """One operation; `resolve` / `reject` name the key of the next one (or None: the end)."""

    key: str
    name: str
    type: str
    options: Mapping[str, Any]
    resolve: str | None = None
    reject: str | None = None


@dataclass(frozen=True)
class Flow:
    """A managed Flow; its first operation is the one the trigger runs."""

    key: str
    name: str
    icon: str
    color: str
    description: str
    trigger: str
    accountability: str | None
    options: Mapping[str, Any]
    operations: tuple[Operation, ...]

    @property
    def id(self) -> str:
        return stable_id(f"flow:{self.key}")

    def operation_id(self, key: str) -> str:
        return stable_id(f"operation:{self.key}:{key}")

    def __post_init__(self) -> None:
        keys = [op.key for op in self.operations]
        if len(set(keys)) != len(keys):
            raise ValueError(f"flow {self.key}: duplicate operation keys")
        targets = [t for op in self.operations for t in (op.resolve, op.reject) if t]
        if unknown := set(targets) - set(keys):
            raise ValueError(f"flow {self.key}: unknown operations {sorted(unknown)}")
        if len(set(targets)) != len(targets):  # Directus: resolve and reject are unique
            raise ValueError(f"flow {self.key}: an operation is the successor of two")


@cache
def script(name: str) -> str:
    """A Run Script operation's code, shipped beside this module."""
    return (resources.files("processor.directus") / name).read_text()


def _trigger(*path: str, test: Mapping[str, Any]) -> dict[str, Any]:
    """A condition on `$trigger.<path>` (Directus's condition checks one path per filter
    object reliably: combine with `_and`)."""
    node: dict[str, Any] = dict(test)
    for part in reversed(path):
        node = {part: node}
    return {"$trigger": node}


def officials_intent() -> Flow:
    return Flow(
        key="officials_intent",
        name="Officials' intent: an edit makes the row manual",
        icon="gavel",
        color="#E35169",
        description=(
            "An edit by a person of a timing record, penalty, stage result or alert (other "
            "than an alert's status/note) sets source = manual, so the processor keeps it "
            f"(ADR 0004, 0011). {MARKER}"
        ),
        trigger="event",
        # The edit itself is in the activity log and revisions; a run log per edit is noise.
        accountability=None,
        options={
            "type": "filter",
            "scope": ["items.update"],
            "collections": list(OUTPUTS),
            "return": "$last",
        },
        operations=(
            Operation(
                key="mark_manual",
                name="Mark the row manual",
                type="exec",
                options={"code": script("officials_intent.js")},
            ),
        ),
    )


_FULL = "$full"
_ALERT_ID = "{{$trigger.payload.payload.id}}"


def critical_alert() -> Flow:
    return Flow(
        key="critical_alert",
        name="Critical alert → race control",
        icon="notification_important",
        color="#E35169",
        description=(
            "A critical alert announced by the processor (processor_events), open or ended, "
            "sends a "
            f"notification to every active race control user, once per alert. {MARKER}"
        ),
        trigger="event",
        accountability="activity",
        options={"type": "action", "scope": ["items.create"], "collections": ["processor_events"]},
        operations=(
            Operation(
                key="critical_open_alert",
                name="A critical alert (open or ended)?",
                type="condition",
                options={
                    "filter": {
                        "_and": [
                            _trigger(
                                "payload",
                                "kind",
                                test={"_in": ["alert.created", "alert.updated"]},
                            ),
                            _trigger(
                                "payload", "payload", "data", "severity", test={"_eq": "critical"}
                            ),
                            # Open, or already ended when announced (Directus was down, or
                            # the car moved on): race control must hear of it either way;
                            # not once an official acknowledged or dismissed it.
                            _trigger(
                                "payload",
                                "payload",
                                "data",
                                "status",
                                test={"_in": ["open", "ended"]},
                            ),
                        ]
                    }
                },
                resolve="notified",
            ),
            Operation(
                key="notified",
                name="Already notified?",
                type="item-read",
                options={
                    "collection": "directus_notifications",
                    "permissions": _FULL,
                    "query": {
                        "filter": {
                            "_and": [
                                {"collection": {"_eq": "alerts"}},
                                {"item": {"_eq": _ALERT_ID}},
                            ]
                        },
                        "fields": ["id"],
                        "limit": 1,
                    },
                },
                resolve="alert",
            ),
            Operation(
                key="alert",
                name="The alert, its car and stage",
                type="item-read",
                options={
                    "collection": "alerts",
                    "key": _ALERT_ID,
                    "permissions": _FULL,
                    "query": {
                        "fields": [
                            "id",
                            "kind",
                            "severity",
                            "started_at",
                            "details",
                            "entry.number",
                            "entry.crew_name",
                            "stage.name",
                        ]
                    },
                },
                resolve="race_control",
            ),
            Operation(
                key="race_control",
                name="Race control's users",
                type="item-read",
                options={
                    "collection": "directus_users",
                    "permissions": _FULL,
                    "query": {
                        "filter": {
                            "_and": [
                                {"role": {"_eq": RACE_CONTROL.id}},
                                {"status": {"_eq": "active"}},
                            ]
                        },
                        "fields": ["id"],
                        "limit": -1,
                    },
                },
                resolve="message",
            ),
            Operation(
                key="message",
                name="Recipients and message",
                type="exec",
                options={"code": script("critical_alert.js")},
                resolve="notify",
            ),
            Operation(
                key="notify",
                name="Notify race control",
                type="notification",
                options={
                    "recipient": "{{message.recipients}}",
                    "subject": "{{message.subject}}",
                    "message": "{{message.message}}",
                    "collection": "alerts",
                    "item": _ALERT_ID,
                    "permissions": _FULL,
                },
            ),
        ),
    )


def declared_flows() -> tuple[Flow, ...]:
    return (officials_intent(), critical_alert())

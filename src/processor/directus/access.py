"""Who may do what in Directus: the project's roles and their permissions, as data.

Directus 10.13 keeps roles in `directus_roles` and one row per (role, collection, action) in
`directus_permissions` (role NULL is the public, the requests without a token); 10.x has no
policies. `processor directus apply` makes a Directus hold exactly what is declared here.

The decisions (ADR 0011):

- Race control reads everything, writes officials' rows (timing records, penalties, stage
  results, alerts: create and update, delete only its own manual rows), may change a stage's
  status and times and an entry's status, and never deletes configuration (events, stages,
  geofences, devices, entries, io_mappings).
- The timekeeper reads the race, creates manual timing records and penalties, and updates
  penalties (a waiver); nothing else.
- The public reads the published results of events marked `public`: the event, its stages,
  its entries (car number, crew, class: what a classification prints) and their stage results.
  Never devices (IMEIs), configuration internals (rules, routes, geofences), officials' notes
  or the processor's keys.
- The dispatcher (the processor's outbox delivery) only creates `processor_events` items and
  reads back their ids; it has no app access.

Invariant: every role's id is derived from its key (stable across machines and re-applies),
no role but the administrator may delete a configuration row, and the public's read
permissions name their fields one by one and filter on `events.public`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Action = Literal["create", "read", "update", "delete"]
ACTIONS: tuple[Action, ...] = ("create", "read", "update", "delete")

CONFIGURATION = ("events", "stages", "geofences", "devices", "entries", "io_mappings")
OUTPUTS = ("timing_records", "penalties", "stage_results", "alerts")
EVENTS = "processor_events"
PROJECT_COLLECTIONS = (*CONFIGURATION, *OUTPUTS, EVENTS)

# The namespace of every id this package gives a Directus row (roles, users, flows,
# operations): uuid5 of a name, so the same declaration has the same ids everywhere.
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:processor:directus")


def stable_id(name: str) -> str:
    """The uuid of a managed Directus row, derived from its stable name."""
    return str(uuid.uuid5(NAMESPACE, name))


@dataclass(frozen=True)
class Fields:
    """The fields a permission covers: every field (`*`), exactly `only`, or every field of
    the collection but `all_but` (resolved against the schema when applied, so a field added
    later is covered without editing this file)."""

    only: tuple[str, ...] | None = None
    all_but: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.only is not None and self.all_but is not None:
            raise ValueError("a permission's fields are `only` or `all_but`, not both")


EVERY_FIELD = Fields()


def only(*names: str) -> Fields:
    return Fields(only=names)


def all_but(*names: str) -> Fields:
    return Fields(all_but=names)


@dataclass(frozen=True)
class Permission:
    """One `directus_permissions` row: `filter` is Directus's `permissions` (which items),
    `validation` what a written payload must satisfy, `presets` the values a new item gets."""

    collection: str
    action: Action
    fields: Fields = EVERY_FIELD
    filter: Mapping[str, Any] = field(default_factory=dict)
    validation: Mapping[str, Any] = field(default_factory=dict)
    presets: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Role:
    """A managed role. `id` None is Directus's public role (requests without a token), whose
    permissions are managed on the project's collections only: a public read of, say, a
    logo in `directus_files` that an operator granted is left alone."""

    key: str
    name: str
    icon: str
    description: str
    app_access: bool
    permissions: tuple[Permission, ...]
    id: str | None = None

    def __post_init__(self) -> None:
        seen = [(p.collection, p.action) for p in self.permissions]
        if len(set(seen)) != len(seen):  # Directus holds one row per (collection, action)
            raise ValueError(f"role {self.key}: two permissions for one collection and action")

    def manages(self, collection: str) -> bool:
        """Whether a permission row of this role on `collection` is ours to converge."""
        return self.id is not None or collection in PROJECT_COLLECTIONS


def _role(key: str, **kwargs: Any) -> Role:
    return Role(key=key, id=stable_id(f"role:{key}"), **kwargs)


# What a person needs beyond Directus's app-access minimum (which already covers their own
# user, role, presets and notifications): the names of other users (who acknowledged an
# alert) and editing their own profile and password; the Studio's recommended defaults.
_OWN_PROFILE = (
    Permission("directus_users", "read", only("id", "first_name", "last_name", "title", "role")),
    Permission(
        "directus_users",
        "update",
        only(
            "first_name",
            "last_name",
            "email",
            "password",
            "location",
            "title",
            "description",
            "avatar",
            "language",
            "appearance",
            "theme_light",
            "theme_dark",
            "theme_light_overrides",
            "theme_dark_overrides",
            "tfa_secret",
        ),
        filter={"id": {"_eq": "$CURRENT_USER"}},
    ),
    Permission("directus_roles", "read", only("id", "name", "icon", "description")),
)

# An official's new row is manual (ADR 0004): `source` and the processor's `key` cannot be
# set on create; the preset makes the source explicit.
_OFFICIAL_ROW = all_but("id", "key", "source", "updated_at")
_MANUAL = {"source": "manual"}
# An edit may set `source` (the officials'-intent Flow adds `source = manual` to the payload,
# and Directus checks the payload after the Flow), never the key or the timestamps.
_EDIT = all_but("id", "key", "updated_at")
_OWN_MANUAL_ROWS = {"source": {"_eq": "manual"}}

RACE_CONTROL = _role(
    "race_control",
    name="Race control",
    icon="sports_score",
    description=(
        "Clerk of the course and race control: read everything, correct timing records, "
        "penalties and results, work alerts; no configuration deletes. "
        "Managed by `processor directus apply`."
    ),
    app_access=True,
    permissions=(
        *(Permission(c, "read") for c in PROJECT_COLLECTIONS),
        *(Permission(c, "create", _OFFICIAL_ROW, presets=_MANUAL) for c in OUTPUTS),
        *(Permission(c, "update", _EDIT) for c in OUTPUTS),
        *(Permission(c, "delete", filter=_OWN_MANUAL_ROWS) for c in OUTPUTS),
        # Delaying, neutralizing or cancelling a stage; retiring or excluding an entry.
        Permission("stages", "update", only("status", "opens_at", "closes_at")),
        Permission("entries", "update", only("status")),
        *_OWN_PROFILE,
    ),
)

TIMEKEEPER = _role(
    "timekeeper",
    name="Timekeeper",
    icon="timer",
    description=(
        "Timekeepers and officials at the controls: read the race, enter manual timing "
        "records and penalties, waive a penalty. Managed by `processor directus apply`."
    ),
    app_access=True,
    permissions=(
        *(Permission(c, "read") for c in ("events", "stages", "geofences", "entries", *OUTPUTS)),
        Permission("timing_records", "create", _OFFICIAL_ROW, presets=_MANUAL),
        Permission("penalties", "create", _OFFICIAL_ROW, presets=_MANUAL),
        Permission(
            "penalties", "update", only("status", "note", "reason", "kind", "amount_ms", "source")
        ),
        *_OWN_PROFILE,
    ),
)

DISPATCHER = _role(
    "dispatcher",
    name="Processor dispatcher",
    icon="send",
    description=(
        "The processor's outbox dispatcher (ADR 0007): creates processor_events items, "
        "nothing else. No app access. Managed by `processor directus apply`."
    ),
    app_access=False,
    permissions=(
        Permission(EVENTS, "create", only("event_key", "kind", "payload", "created_at")),
        # Enough to answer a create with the new item's id and to check what was delivered
        # by event_key, without reading the payloads back.
        Permission(EVENTS, "read", only("id", "event_key", "kind", "created_at")),
    ),
)

_PUBLIC_EVENT = {"public": {"_eq": True}}

PUBLIC = Role(
    key="public",
    id=None,
    name="Public",
    icon="public",
    description="Requests without a token: the published results of public events.",
    app_access=False,
    permissions=(
        Permission(
            "events",
            "read",
            only("id", "name", "starts_at", "ends_at", "timezone", "status", "public"),
            filter=_PUBLIC_EVENT,
        ),
        Permission(
            "stages",
            "read",
            only("id", "event", "name", "sequence", "opens_at", "closes_at", "status"),
            filter={"event": _PUBLIC_EVENT},
        ),
        # Classifications print the car number, the crew and the class; the tracker (and so
        # the IMEI) is not published.
        Permission(
            "entries",
            "read",
            only("id", "event", "number", "crew_name", "class", "status"),
            filter={"event": _PUBLIC_EVENT},
        ),
        Permission(
            "stage_results",
            "read",
            only(
                "id",
                "stage",
                "entry",
                "start_at",
                "finish_at",
                "elapsed_ms",
                "penalty_ms",
                "total_ms",
                "status",
                "rank",
                "class_rank",
                "gap_leader_ms",
                "gap_ahead_ms",
                "splits",
                "updated_at",
            ),
            filter={"stage": {"event": _PUBLIC_EVENT}},
        ),
    ),
)

ROLES: tuple[Role, ...] = (RACE_CONTROL, TIMEKEEPER, DISPATCHER, PUBLIC)
ROLES_BY_KEY: Mapping[str, Role] = {r.key: r for r in ROLES}


@dataclass(frozen=True)
class User:
    """A managed user (the dispatcher's identity): its token comes from the environment."""

    key: str
    first_name: str
    last_name: str
    role: Role
    id: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", stable_id(f"user:{self.key}"))


DISPATCHER_USER = User("dispatcher", "Processor", "dispatcher", DISPATCHER)

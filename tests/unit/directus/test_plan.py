"""Planning converges: a plan applied, then planned again, is empty (no services).

`Site` below holds what a Directus holds and executes a plan's requests the way Directus
does where it matters (ids given to permissions, foreign keys and unique successors of
operations, the cascade from a flow to its operations, tokens never read back).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from processor.directus.access import (
    DISPATCHER_USER,
    PROJECT_COLLECTIONS,
    PUBLIC,
    RACE_CONTROL,
    ROLES,
    TIMEKEEPER,
    Permission,
    Role,
    only,
)
from processor.directus.flows import MARKER, Flow, Operation, critical_alert, declared_flows
from processor.directus.plan import (
    Plan,
    PlanError,
    Request,
    State,
    make_plan,
    successors_first,
)

FIELDS: dict[str, frozenset[str]] = {
    "events": frozenset(
        {"id", "name", "starts_at", "ends_at", "timezone", "status", "rules", "public"}
    ),
    "stages": frozenset(
        {
            "id",
            "event",
            "name",
            "sequence",
            "opens_at",
            "closes_at",
            "status",
            "max_time_s",
            "route",
        }
    ),
    "entries": frozenset({"id", "event", "device", "number", "crew_name", "class", "status"}),
    "geofences": frozenset({"id", "event", "stage", "kind", "geometry"}),
    "devices": frozenset({"id", "imei", "model", "label"}),
    "io_mappings": frozenset({"id", "model", "io_id", "name"}),
    "timing_records": frozenset(
        {
            "id",
            "key",
            "stage",
            "entry",
            "geofence",
            "kind",
            "crossed_at",
            "source",
            "status",
            "note",
            "updated_at",
        }
    ),
    "penalties": frozenset(
        {
            "id",
            "key",
            "stage",
            "entry",
            "kind",
            "amount_ms",
            "reason",
            "status",
            "source",
            "note",
            "updated_at",
        }
    ),
    "stage_results": frozenset(
        {
            "id",
            "key",
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
            "source",
            "note",
            "updated_at",
        }
    ),
    "alerts": frozenset(
        {"id", "key", "kind", "severity", "status", "source", "note", "updated_at"}
    ),
    "processor_events": frozenset({"id", "event_key", "kind", "payload", "created_at"}),
    "directus_users": frozenset(
        {
            "id",
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
            "role",
            "token",
            "status",
        }
    ),
    "directus_roles": frozenset({"id", "name", "icon", "description"}),
}


class Site:
    """What a Directus holds, changed by a plan's requests."""

    def __init__(self, fields: Mapping[str, frozenset[str]] = FIELDS) -> None:
        self.fields = dict(fields)
        self.roles: dict[str, dict[str, Any]] = {}
        self.permissions: dict[int, dict[str, Any]] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, str] = {}
        self.flows: dict[str, dict[str, Any]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)

    def state(self, tokens: Mapping[str, str] | None = None) -> State:
        return State(
            fields=self.fields,
            roles=dict(self.roles),
            permissions=[dict(p) for p in self.permissions.values()],
            users=dict(self.users),
            tokens_ok={u: self.tokens.get(u) == t for u, t in (tokens or {}).items()},
            flows=dict(self.flows),
            operations=list(self.operations.values()),
        )

    def send(self, r: Request) -> None:
        parts = r.path.strip("/").split("/")
        table, key = parts[0], parts[1] if len(parts) > 1 else None
        body = dict(r.body or {})
        if table == "roles":
            self.roles.setdefault(key or body["id"], {}).update(body)
        elif table == "permissions":
            if r.method == "POST":
                pid = next(self._ids)
                self.permissions[pid] = {"id": pid, **body}
            elif r.method == "PATCH":
                self.permissions[int(str(key))].update(body)
            else:
                del self.permissions[int(str(key))]
        elif table == "users":
            token = body.pop("token", None)
            uid = key or body["id"]
            if token is not None:
                self.tokens[uid] = token
            self.users.setdefault(uid, {}).update(body)
        elif table == "flows":
            if r.method == "DELETE":
                del self.flows[str(key)]
                self.operations = {i: o for i, o in self.operations.items() if o["flow"] != key}
            elif r.method == "POST":
                assert body["id"] not in self.flows
                self.flows[body["id"]] = body
            else:
                assert body.get("operation") in (None, *self.operations)
                self.flows[str(key)].update(body)
        elif table == "operations":
            assert r.method == "POST"
            for link in ("resolve", "reject"):  # Directus's foreign keys and unique links
                target = body.get(link)
                if target is not None:
                    assert target in self.operations, f"{link} {target} does not exist yet"
                    assert all(o.get(link) != target for o in self.operations.values())
            self.operations[body["id"]] = body
        else:
            raise AssertionError(r)

    def apply(self, plan: Plan) -> None:
        for request in plan.requests:
            self.send(request)


TOKEN = "dispatcher-secret"
RC_ID = str(RACE_CONTROL.id)


def plan(
    site: Site,
    token: str | None = TOKEN,
    roles: Sequence[Role] = ROLES,
    flows: Sequence[Flow] | None = None,
) -> Plan:
    return make_plan(
        site.state({DISPATCHER_USER.id: token} if token else None),
        roles,
        [(DISPATCHER_USER, token)],
        declared_flows() if flows is None else flows,
    )


def converged(site: Site, token: str | None = TOKEN) -> Site:
    site.apply(plan(site, token))
    again = plan(site, token)
    assert again.changes == [], again.changes
    assert again.requests == []
    return site


def test_a_fresh_directus_gets_everything_then_nothing() -> None:
    site = Site()
    first = plan(site)
    kinds = {c.kind for c in first.changes}
    assert kinds == {"role", "permission", "user", "flow", "operation"}
    assert {c.change for c in first.changes} == {"create"}
    assert first.warnings == []
    converged(site)
    assert len(site.roles) == 3
    assert len(site.permissions) == sum(len(r.permissions) for r in ROLES)
    assert site.tokens == {DISPATCHER_USER.id: TOKEN}
    assert {f["name"] for f in site.flows.values()} == {f.name for f in declared_flows()}


def test_the_token_is_never_in_the_report() -> None:
    site = Site()
    first = plan(site)
    assert TOKEN not in repr(first.changes)
    site.apply(first)
    rotated = plan(site, "a-new-secret")
    assert [(c.kind, c.change, c.detail) for c in rotated.changes] == [("user", "update", "token")]
    assert "a-new-secret" not in repr(rotated.changes)
    assert rotated.requests == [
        Request("PATCH", f"/users/{DISPATCHER_USER.id}", {"token": "a-new-secret"})
    ]


def test_without_a_token_the_dispatcher_user_is_not_created() -> None:
    site = Site()
    first = plan(site, token=None)
    assert not [c for c in first.changes if c.kind == "user"]
    assert first.warnings == ["user Processor dispatcher: not created, its token is not configured"]
    site.apply(first)
    assert site.users == {}


def test_a_missing_collection_is_an_error_a_missing_field_a_warning() -> None:
    fields = {c: f for c, f in FIELDS.items() if c != "processor_events"}
    with pytest.raises(PlanError, match="processor_events: apply the schema snapshot"):
        plan(Site(fields))
    older = dict(FIELDS, penalties=FIELDS["penalties"] - {"note"})
    first = plan(Site(older))
    assert first.warnings == [
        "Timekeeper: update penalties: the schema has no field note (left out)"
    ]
    update = next(
        r.body
        for r in first.requests
        if r.path == "/permissions"
        and r.body["role"] == TIMEKEEPER.id
        and r.body["collection"] == "penalties"
        and r.body["action"] == "update"
    )
    assert update["fields"] == ["amount_ms", "kind", "reason", "source", "status"]


def test_all_but_follows_the_schema() -> None:
    site = converged(Site())
    site.fields["penalties"] = site.fields["penalties"] | {"decision_ref"}
    again = plan(site)
    got = {(c.name, c.detail) for c in again.changes}
    assert got == {
        ("Race control: create penalties", "fields +decision_ref"),
        ("Race control: update penalties", "fields +decision_ref"),
        ("Timekeeper: create penalties", "fields +decision_ref"),
    }


def test_undeclared_permissions_of_managed_roles_go_others_stay() -> None:
    site = converged(Site())
    extra: dict[str, Any] = {
        "validation": None,
        "presets": None,
        "fields": ["*"],
        "permissions": {},
    }
    site.send(
        Request(
            "POST",
            "/permissions",
            {"role": TIMEKEEPER.id, "collection": "events", "action": "delete", **extra},
        )
    )
    site.send(
        Request(
            "POST",
            "/permissions",
            {"role": None, "collection": "devices", "action": "read", **extra},
        )
    )
    site.send(
        Request(
            "POST",
            "/permissions",  # an operator's public logo: not ours
            {"role": None, "collection": "directus_files", "action": "read", **extra},
        )
    )
    site.send(
        Request(
            "POST",
            "/permissions",  # another role's: not ours
            {"role": "someone-else", "collection": "events", "action": "delete", **extra},
        )
    )
    again = plan(site)
    assert {(c.name, c.change, c.detail) for c in again.changes} == {
        ("Timekeeper: delete events", "delete", "not declared"),
        ("Public: read devices", "delete", "not declared"),
    }
    converged(site)
    assert {(p["role"], p["collection"]) for p in site.permissions.values()} >= {
        (None, "directus_files"),
        ("someone-else", "events"),
    }


def test_duplicates_are_deleted_and_differences_updated() -> None:
    site = converged(Site())
    rc_read = next(
        p
        for p in site.permissions.values()
        if p["role"] == RACE_CONTROL.id and p["collection"] == "alerts" and p["action"] == "read"
    )
    site.send(Request("POST", "/permissions", {k: v for k, v in rc_read.items() if k != "id"}))
    public_entries = next(
        p for p in site.permissions.values() if p["role"] is None and p["collection"] == "entries"
    )
    public_entries["fields"] = [*public_entries["fields"], "device"]
    public_entries["permissions"] = {}
    again = plan(site)
    assert {(c.name, c.change, c.detail) for c in again.changes} == {
        ("Race control: read alerts", "delete", "duplicate"),
        ("Public: read entries", "update", "fields -device, items"),
    }
    converged(site)


def test_how_directus_spells_no_rule_and_field_lists_is_not_a_change() -> None:
    site = converged(Site())
    for p in site.permissions.values():
        p["permissions"] = p["permissions"] or None
        p["validation"] = {} if p["validation"] is None else p["validation"]
        p["fields"] = ",".join(reversed(p["fields"]))  # stored comma-separated, any order
    assert plan(site).changes == []


def test_system_rows_without_an_id_are_ignored() -> None:
    site = converged(Site())
    state = site.state({DISPATCHER_USER.id: TOKEN})
    builtin: dict[str, Any] = {
        "role": RACE_CONTROL.id,
        "collection": "directus_settings",
        "action": "read",
        "permissions": {},
        "fields": ["*"],
        "system": True,
    }
    state = dataclasses.replace(state, permissions=[*state.permissions, builtin])
    result = make_plan(state, ROLES, [(DISPATCHER_USER, TOKEN)], declared_flows())
    assert result.changes == []


def test_a_role_edited_in_the_studio_is_put_back() -> None:
    site = converged(Site())
    site.roles[RC_ID]["app_access"] = False
    site.roles[RC_ID]["admin_access"] = True
    again = plan(site)
    assert [(c.name, c.change, c.detail) for c in again.changes] == [
        ("Race control", "update", "app_access, admin_access")
    ]
    converged(site)
    assert site.roles[RC_ID]["admin_access"] is False


def test_a_changed_flow_is_made_again_under_the_same_ids() -> None:
    site = converged(Site())
    flow = critical_alert()
    op_ids = {o["id"] for o in site.operations.values() if o["flow"] == flow.id}
    notify = flow.operation_id("notify")
    site.operations[notify]["options"] = {"recipient": "someone"}
    site.flows[flow.id]["status"] = "inactive"
    again = plan(site)
    assert {(c.kind, c.name, c.change, c.detail) for c in again.changes} == {
        ("flow", flow.name, "update", "status"),
        ("operation", f"{flow.name} · notify", "update", "options"),
    }
    assert again.requests[0] == Request("DELETE", f"/flows/{flow.id}")
    converged(site)
    assert {o["id"] for o in site.operations.values() if o["flow"] == flow.id} == op_ids
    assert site.flows[flow.id]["operation"] == flow.operation_id("critical_open_alert")


def test_an_extra_operation_added_in_the_studio_is_removed() -> None:
    site = converged(Site())
    flow = critical_alert()
    site.operations["extra"] = {"id": "extra", "flow": flow.id, "key": "log", "type": "log"}
    again = plan(site)
    assert [(c.kind, c.change) for c in again.changes] == [("operation", "delete")]
    converged(site)
    assert "extra" not in site.operations


def test_a_managed_flow_no_longer_declared_is_deleted_others_stay() -> None:
    site = converged(Site())
    site.send(Request("POST", "/flows", {"id": "old", "name": "Old", "description": MARKER}))
    site.send(Request("POST", "/flows", {"id": "theirs", "name": "Theirs", "description": "x"}))
    again = plan(site)
    assert [(c.kind, c.name, c.change) for c in again.changes] == [("flow", "Old", "delete")]
    converged(site)
    assert "theirs" in site.flows


def test_operations_are_created_successors_first() -> None:
    ops = [
        {"id": "a", "resolve": "b", "reject": "c"},
        {"id": "b", "resolve": "d"},
        {"id": "c"},
        {"id": "d"},
    ]
    order = [o["id"] for o in successors_first(ops)]
    for op in ops:
        for nxt in (op.get("resolve"), op.get("reject")):
            if nxt:
                assert order.index(nxt) < order.index(op["id"])
    with pytest.raises(PlanError, match="own successor"):
        successors_first([{"id": "a", "resolve": "b"}, {"id": "b", "resolve": "a"}])


def test_a_flow_declaration_is_checked() -> None:
    def flow(*ops: Operation) -> Flow:
        return Flow("f", "F", "i", "#000", "", "event", None, {}, ops)

    with pytest.raises(ValueError, match="duplicate"):
        flow(Operation("a", "A", "log", {}), Operation("a", "A", "log", {}))
    with pytest.raises(ValueError, match="unknown"):
        flow(Operation("a", "A", "log", {}, resolve="b"))
    with pytest.raises(ValueError, match="successor of two"):
        flow(
            Operation("a", "A", "log", {}, resolve="c"),
            Operation("b", "B", "log", {}, resolve="c"),
            Operation("c", "C", "log", {}),
        )


def test_only_the_given_roles_are_managed() -> None:
    role = Role("x", "X", "i", "d", True, (Permission("events", "read", only("id")),), id="x-id")
    site = Site()
    first = make_plan(site.state(), [role], [], [])
    assert [(c.kind, c.change) for c in first.changes] == [
        ("role", "create"),
        ("permission", "create"),
    ]
    assert PUBLIC.manages("events")
    assert set(PROJECT_COLLECTIONS) <= set(FIELDS)

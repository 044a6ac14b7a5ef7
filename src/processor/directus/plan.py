"""What `processor directus apply` must change: the declaration against a Directus's state.

Pure: the state read from Directus (`State`) and the declaration (`access`, `flows`) in, the
REST requests that converge it out (`Plan.requests`, in the order they must run) and what
they mean (`Plan.changes`). Nothing here talks to Directus, so the rules are unit-tested and
`--dry-run` prints exactly what a real run would change.

Convergence rules:

- Roles: created when missing, updated when their name, icon, description or app access
  differ; never deleted (users may be attached).
- Permissions: per (role, collection, action), created, updated (fields, item filter,
  validation, presets) or deleted when no longer declared — every permission of the managed
  roles, and the public's on the project's collections only. Duplicates of one (role,
  collection, action) are deleted.
- Explicit field lists are resolved against the collection's fields: a declared field the
  schema does not have (an older snapshot) is left out with a warning; a missing project
  collection is an error (apply the snapshot first).
- Users: the dispatcher's user is created with its token, its name/role/status converged, and
  its token replaced only when it no longer authenticates as that user (Directus never
  returns tokens, so apply asks Directus who the token is).
- Flows: a Flow that differs in anything (its own fields or any operation) is deleted and
  created again under the same ids, its operations first-successor-first; a managed Flow no
  longer declared (found by `flows.MARKER`) is deleted.

Invariant: applying a plan and planning again yields no steps (the comparison normalizes
exactly what Directus normalizes: empty filters as null or `{}`, field lists as sets).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from processor.directus.access import (
    PROJECT_COLLECTIONS,
    Fields,
    Permission,
    Role,
    User,
)
from processor.directus.flows import MARKER, Flow

ChangeKind = Literal["create", "update", "delete"]
Row = Mapping[str, Any]


class PlanError(Exception):
    """The Directus cannot take the declaration as it is (e.g. the snapshot is not applied)."""


@dataclass(frozen=True)
class State:
    """What a Directus holds, as its REST API returns it (admin view)."""

    fields: Mapping[str, frozenset[str]]  # collection → its field names
    roles: Mapping[str, Row]  # id → role row (the managed ids only)
    permissions: Sequence[Row]  # rows of the managed roles and of the public
    users: Mapping[str, Row]  # id → user row (the managed ids only)
    tokens_ok: Mapping[str, bool]  # user id → its declared token authenticates as it
    flows: Mapping[str, Row]  # id → flow row (declared ids and MARKER-ed ones)
    operations: Sequence[Row]  # the operations of those flows


@dataclass(frozen=True)
class Change:
    """One line of the report: what changes in Directus."""

    kind: str  # role, permission, user, flow, operation
    name: str
    change: ChangeKind
    detail: str = ""


@dataclass(frozen=True)
class Request:
    """One REST request of the plan."""

    method: str
    path: str
    body: Any = None


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unchanged: int = 0

    def add(self, change: Change, *requests: Request) -> None:
        self.changes.append(change)
        self.requests.extend(requests)


# -- roles -----------------------------------------------------------------------------------

_ROLE_FIELDS = ("name", "icon", "description", "app_access", "admin_access")


def role_row(role: Role) -> dict[str, Any]:
    return {
        "id": role.id,
        "name": role.name,
        "icon": role.icon,
        "description": role.description,
        "app_access": role.app_access,
        "admin_access": False,
    }


def _plan_roles(plan: Plan, state: State, roles: Iterable[Role]) -> None:
    for role in roles:
        if role.id is None:
            continue
        want = role_row(role)
        have = state.roles.get(role.id)
        if have is None:
            plan.add(Change("role", role.name, "create"), Request("POST", "/roles", want))
            continue
        diff = [k for k in _ROLE_FIELDS if have.get(k) != want[k]]
        if diff:
            plan.add(
                Change("role", role.name, "update", ", ".join(diff)),
                Request("PATCH", f"/roles/{role.id}", {k: want[k] for k in diff}),
            )
        else:
            plan.unchanged += 1


# -- permissions -----------------------------------------------------------------------------


def resolve_fields(spec: Fields, existing: frozenset[str]) -> tuple[list[str], list[str]]:
    """(the field list to store, the declared fields the schema lacks)."""
    if spec.only is not None:
        present = [f for f in spec.only if f in existing]
        return sorted(present), [f for f in spec.only if f not in existing]
    if spec.all_but is not None:
        return sorted(existing - set(spec.all_but)), []
    return ["*"], []


def _filter(value: Any) -> Any:
    """Directus stores "no rule" as null or `{}`: one value for comparing."""
    return value or None


def _normal(row: Row) -> tuple[Any, ...]:
    fields = row.get("fields")
    if isinstance(fields, str):  # stored comma-separated; the API returns a list
        fields = fields.split(",")
    return (
        _filter(row.get("permissions")),
        _filter(row.get("validation")),
        _filter(row.get("presets")),
        tuple(sorted(fields or ())),
    )


def permission_row(role: Role, permission: Permission, fields: list[str]) -> dict[str, Any]:
    return {
        "role": role.id,
        "collection": permission.collection,
        "action": permission.action,
        "permissions": dict(permission.filter),
        "validation": dict(permission.validation) or None,
        "presets": dict(permission.presets) or None,
        "fields": fields,
    }


def _label(role: Role, collection: str, action: str) -> str:
    return f"{role.name}: {action} {collection}"


def _what_differs(have: Row, want: Row) -> str:
    """E.g. `fields +note -reason, items`: what an update of a permission changes."""
    (*rules_have, fields_have), (*rules_want, fields_want) = _normal(have), _normal(want)
    parts = []
    added = sorted(set(fields_want) - set(fields_have))
    removed = sorted(set(fields_have) - set(fields_want))
    if added or removed:
        parts.append(" ".join(["fields", *(f"+{f}" for f in added), *(f"-{f}" for f in removed)]))
    names = ("items", "validation", "presets")
    parts += [n for n, a, b in zip(names, rules_have, rules_want, strict=True) if a != b]
    return ", ".join(parts)


def _plan_permissions(plan: Plan, state: State, roles: Sequence[Role]) -> None:
    missing = [c for c in PROJECT_COLLECTIONS if c not in state.fields]
    if missing:
        raise PlanError(
            "the Directus has no collection "
            + ", ".join(missing)
            + ": apply the schema snapshot first (directus/snapshot.yaml)"
        )
    by_role: dict[str | None, Role] = {r.id: r for r in roles}
    current: dict[tuple[str | None, str, str], list[Row]] = {}
    for row in sorted(state.permissions, key=lambda r: int(r.get("id") or 0)):
        role = by_role.get(row.get("role"))
        if row.get("id") is None or role is None or not role.manages(row["collection"]):
            continue  # Directus's built-in app permissions, or not ours
        current.setdefault((role.id, row["collection"], row["action"]), []).append(row)

    for role in roles:
        for permission in role.permissions:
            existing = state.fields.get(permission.collection, frozenset())
            fields, absent = resolve_fields(permission.fields, existing)
            label = _label(role, permission.collection, permission.action)
            if absent:
                plan.warnings.append(
                    f"{label}: the schema has no field {', '.join(absent)} (left out)"
                )
            want = permission_row(role, permission, fields)
            rows = current.pop((role.id, permission.collection, permission.action), [])
            if not rows:
                plan.add(
                    Change("permission", label, "create", _fields_text(fields, permission)),
                    Request("POST", "/permissions", want),
                )
                continue
            have, *duplicates = rows
            if _normal(have) != _normal(want):
                body = {k: want[k] for k in ("permissions", "validation", "presets", "fields")}
                plan.add(
                    Change("permission", label, "update", _what_differs(have, want)),
                    Request("PATCH", f"/permissions/{have['id']}", body),
                )
            else:
                plan.unchanged += 1
            for dup in duplicates:
                plan.add(
                    Change("permission", label, "delete", "duplicate"),
                    Request("DELETE", f"/permissions/{dup['id']}"),
                )
    for (role_id, collection, action), rows in sorted(current.items(), key=lambda kv: str(kv[0])):
        role = by_role[role_id]
        for row in rows:
            plan.add(
                Change("permission", _label(role, collection, action), "delete", "not declared"),
                Request("DELETE", f"/permissions/{row['id']}"),
            )


def _fields_text(fields: list[str], permission: Permission) -> str:
    text = "all fields" if fields == ["*"] else f"{len(fields)} fields"
    if permission.filter:
        text += ", some items"
    if permission.presets:
        text += ", presets"
    return text


# -- users -----------------------------------------------------------------------------------


def user_row(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "role": user.role.id,
        "status": "active",
    }


def _plan_users(plan: Plan, state: State, users: Sequence[tuple[User, str | None]]) -> None:
    """`users`: each managed user and its token (None: not configured, left as it is)."""
    for user, token in users:
        label = f"{user.first_name} {user.last_name}"
        want = user_row(user)
        have = state.users.get(user.id)
        if have is None:
            if token is None:
                plan.warnings.append(f"user {label}: not created, its token is not configured")
                continue
            plan.add(
                Change("user", label, "create", f"role {user.role.name}, static token"),
                Request("POST", "/users", {**want, "token": token}),
            )
            continue
        diff = [k for k in ("first_name", "last_name", "role", "status") if have.get(k) != want[k]]
        token_stale = token is not None and not state.tokens_ok.get(user.id, False)
        if not diff and not token_stale:
            plan.unchanged += 1
            continue
        body: dict[str, Any] = {k: want[k] for k in diff}
        if token_stale:
            body["token"] = token
        plan.add(
            Change(
                "user", label, "update", ", ".join([*diff, *(["token"] if token_stale else [])])
            ),
            Request("PATCH", f"/users/{user.id}", body),
        )


# -- flows -----------------------------------------------------------------------------------

_FLOW_FIELDS = (
    "name",
    "icon",
    "color",
    "description",
    "status",
    "trigger",
    "accountability",
    "options",
    "operation",
)
_OPERATION_FIELDS = (
    "key",
    "name",
    "type",
    "options",
    "resolve",
    "reject",
    "position_x",
    "position_y",
    "flow",
)
# Where the Studio draws the operations: a row to the right of the trigger (grid units).
_FIRST_X, _STEP_X, _Y = 19, 18, 1


def flow_rows(flow: Flow) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The flow row (with its entry point) and its operation rows, in declaration order."""
    ops = []
    for i, op in enumerate(flow.operations):
        ops.append(
            {
                "id": flow.operation_id(op.key),
                "flow": flow.id,
                "key": op.key,
                "name": op.name,
                "type": op.type,
                "options": dict(op.options),
                "resolve": flow.operation_id(op.resolve) if op.resolve else None,
                "reject": flow.operation_id(op.reject) if op.reject else None,
                "position_x": _FIRST_X + _STEP_X * i,
                "position_y": _Y,
            }
        )
    row = {
        "id": flow.id,
        "name": flow.name,
        "icon": flow.icon,
        "color": flow.color,
        "description": flow.description,
        "status": "active",
        "trigger": flow.trigger,
        "accountability": flow.accountability,
        "options": dict(flow.options),
        "operation": ops[0]["id"] if ops else None,
    }
    return row, ops


def successors_first(ops: Sequence[Row]) -> list[Row]:
    """The operations ordered so each one's resolve/reject target comes before it (Directus
    checks those references when an operation is created)."""
    by_id = {op["id"]: op for op in ops}
    done: set[str] = set()
    order: list[Row] = []

    def visit(op_id: str, path: frozenset[str]) -> None:
        if op_id in done or op_id not in by_id:
            return
        if op_id in path:
            raise PlanError(f"operation {op_id} is its own successor")
        op = by_id[op_id]
        for nxt in (op.get("resolve"), op.get("reject")):
            if nxt:
                visit(nxt, path | {op_id})
        done.add(op_id)
        order.append(op)

    for op in ops:
        visit(op["id"], frozenset())
    return order


def _differs(have: Row, want: Row, names: Sequence[str]) -> list[str]:
    return [n for n in names if have.get(n) != want.get(n)]


def _trigger_text(flow: Flow) -> str:
    options = flow.options
    scope = ", ".join(options.get("scope", ()))
    collections = ", ".join(options.get("collections", ()))
    return f"{options.get('type', flow.trigger)} on {scope} of {collections}"


def _plan_flows(plan: Plan, state: State, flows: Sequence[Flow]) -> None:
    declared = {f.id for f in flows}
    ops_by_flow: dict[str, dict[str, Row]] = {}
    for op in state.operations:
        ops_by_flow.setdefault(op["flow"], {})[op["id"]] = op
    for flow in flows:
        want, want_ops = flow_rows(flow)
        have = state.flows.get(flow.id)
        have_ops = ops_by_flow.get(flow.id, {})
        changes: list[Change] = []
        if have is None:
            changes.append(Change("flow", flow.name, "create", _trigger_text(flow)))
        elif diff := _differs(have, want, _FLOW_FIELDS):
            changes.append(Change("flow", flow.name, "update", ", ".join(diff)))
        want_ids = {op["id"] for op in want_ops}
        for op in want_ops:
            old = have_ops.get(op["id"])
            label = f"{flow.name} · {op['key']}"
            if old is None:
                changes.append(Change("operation", label, "create", op["type"]))
            elif op_diff := _differs(old, op, _OPERATION_FIELDS):
                changes.append(Change("operation", label, "update", ", ".join(op_diff)))
        for op_id, old in have_ops.items():
            if op_id not in want_ids:
                label = f"{flow.name} · {old.get('key')}"
                changes.append(Change("operation", label, "delete", "not declared"))
        if not changes:
            plan.unchanged += 1
            continue
        # Anything differs: the Flow is made again under the same ids (its operations go with
        # it: ON DELETE CASCADE), which also keeps the unique resolve/reject constraints from
        # tripping while a chain would be re-linked in place.
        requests: list[Request] = []
        if have is not None:
            requests.append(Request("DELETE", f"/flows/{flow.id}"))
        requests.append(Request("POST", "/flows", {**want, "operation": None}))
        requests.extend(Request("POST", "/operations", op) for op in successors_first(want_ops))
        if want["operation"] is not None:
            requests.append(Request("PATCH", f"/flows/{flow.id}", {"operation": want["operation"]}))
        plan.changes.extend(changes)
        plan.requests.extend(requests)
    for flow_id, row in sorted(state.flows.items()):
        if flow_id not in declared and MARKER in (row.get("description") or ""):
            plan.add(
                Change("flow", row.get("name") or flow_id, "delete", "not declared"),
                Request("DELETE", f"/flows/{flow_id}"),
            )


# -- the whole plan --------------------------------------------------------------------------


def make_plan(
    state: State,
    roles: Sequence[Role],
    users: Sequence[tuple[User, str | None]],
    flows: Sequence[Flow],
) -> Plan:
    """Every step, in order: roles, permissions, users (they need their role), Flows (the
    example Flow reads race control's users)."""
    plan = Plan()
    _plan_roles(plan, state, roles)
    _plan_permissions(plan, state, roles)
    _plan_users(plan, state, users)
    _plan_flows(plan, state, flows)
    return plan

"""Converge a Directus to the declared roles, permissions, users and Flows.

Reads the state the plan needs (the collections' fields, the managed roles, their and the
public's permissions, the managed users and whether their tokens still authenticate, the
managed Flows and their operations), plans (`plan.make_plan`, pure) and, unless it is a dry
run, sends the plan's requests in order.

Invariant: a run either sends every request of its plan or stops at the first refused one
with a `DirectusError` naming it; in both cases running again converges (each request is
planned from what Directus holds then), and a second run after a complete one sends nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from processor.directus.access import DISPATCHER_USER, ROLES, Role, User
from processor.directus.client import AdminClient, DirectusError
from processor.directus.flows import MARKER, Flow, declared_flows
from processor.directus.plan import Plan, State, make_plan

__all__ = ["DirectusError", "Outcome", "apply", "read_state"]


@dataclass(frozen=True)
class Outcome:
    plan: Plan
    applied: bool  # False: a dry run, nothing was sent


async def read_state(
    client: AdminClient,
    roles: Sequence[Role],
    users: Sequence[tuple[User, SecretStr | None]],
    flows: Sequence[Flow],
) -> State:
    fields: dict[str, set[str]] = {}
    for row in await client.get("/fields", limit=-1):
        fields.setdefault(row["collection"], set()).add(row["field"])
    role_ids = [r.id for r in roles if r.id is not None]
    role_rows = await client.get(
        "/roles",
        filter={"id": {"_in": role_ids}},
        fields="id,name,icon,description,app_access,admin_access",
        limit=-1,
    )
    permission_filter: dict[str, Any] = {"role": {"_in": role_ids}}
    if any(r.id is None for r in roles):
        permission_filter = {"_or": [permission_filter, {"role": {"_null": True}}]}
    permissions = await client.get("/permissions", filter=permission_filter, limit=-1)
    user_ids = [u.id for u, _ in users]
    user_rows = (
        await client.get(
            "/users",
            filter={"id": {"_in": user_ids}},
            fields="id,first_name,last_name,role,status",
            limit=-1,
        )
        if user_ids
        else []
    )
    tokens_ok = {
        user.id: await client.whoami(token) == user.id for user, token in users if token is not None
    }
    flow_rows = await client.get(
        "/flows",
        filter={
            "_or": [
                {"id": {"_in": [f.id for f in flows] or ["-"]}},
                {"description": {"_contains": MARKER}},
            ]
        },
        fields="id,name,icon,color,description,status,trigger,accountability,options,operation",
        limit=-1,
    )
    flow_ids = [row["id"] for row in flow_rows]
    operations = (
        await client.get(
            "/operations",
            filter={"flow": {"_in": flow_ids}},
            fields="id,flow,key,name,type,options,resolve,reject,position_x,position_y",
            limit=-1,
        )
        if flow_ids
        else []
    )
    return State(
        fields={c: frozenset(f) for c, f in fields.items()},
        roles={row["id"]: row for row in role_rows},
        permissions=permissions,
        users={row["id"]: row for row in user_rows},
        tokens_ok=tokens_ok,
        flows={row["id"]: row for row in flow_rows},
        operations=operations,
    )


async def apply(
    client: AdminClient,
    *,
    dispatcher_token: SecretStr | None,
    dry_run: bool = False,
    roles: Sequence[Role] = ROLES,
    flows: Sequence[Flow] | None = None,
) -> Outcome:
    """Plan against what `client`'s Directus holds and, unless `dry_run`, apply the plan.
    `dispatcher_token` None leaves the dispatcher's user as it is (not created if missing)."""
    users = [(DISPATCHER_USER, dispatcher_token)]
    declared = declared_flows() if flows is None else tuple(flows)
    state = await read_state(client, roles, users, declared)
    plan = make_plan(
        state,
        roles,
        [(u, None if t is None else t.get_secret_value()) for u, t in users],
        declared,
    )
    if dry_run:
        return Outcome(plan, applied=False)
    for request in plan.requests:
        await client.send(request.method, request.path, request.body)
    return Outcome(plan, applied=True)

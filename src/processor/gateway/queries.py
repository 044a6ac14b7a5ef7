"""The gateway's reads of PostgreSQL: the roster, and what a snapshot holds.

Read-only and bounded (a statement timeout on the pool, limits on every list): a
snapshot is taken when a client subscribes or resyncs, and a stage board when the
stage's results changed (once per interval per gateway, not per client). The boards
are `processor leaderboard`'s (`tools/leaderboard.py`), so the page shows what
`processor leaderboard --json` prints.

Invariant: never writes; every row of a snapshot is in the same shape as the `data` of
a live change of its collection (`to_jsonb` of the Directus row).
"""

from __future__ import annotations

import json
from typing import Any, cast

import asyncpg
import msgspec

from processor.gateway.roster import EntryInfo, EventInfo, Roster, StageInfo
from processor.gateway.scope import Scope, Subscription
from processor.gateway.visibility import PRIVATE_FIELDS
from processor.storage.pool import DbConnection
from processor.tools.leaderboard import LeaderboardError, read_event_board, read_stage_board

MAX_ALERTS = 200
MAX_PENALTIES = 500


async def read_roster(conn: DbConnection) -> Roster:
    events = {
        r["id"]: EventInfo(r["id"], r["name"], bool(r["public"]), r["timezone"] or "UTC")
        for r in await conn.fetch("SELECT id, name, public, timezone FROM public.events")
    }
    stages = {
        r["id"]: StageInfo(r["id"], r["event"], r["name"], r["sequence"])
        for r in await conn.fetch("SELECT id, event, name, sequence FROM public.stages")
    }
    entries = {
        r["id"]: EntryInfo(r["id"], r["event"], r["number"], r["crew_name"], r["class"], r["imei"])
        for r in await conn.fetch(
            "SELECT n.id, n.event, n.number, n.crew_name, n.class, d.imei"
            " FROM public.entries n LEFT JOIN public.devices d ON d.id = n.device"
        )
    }
    return Roster(events, stages, entries)


async def read_board(conn: DbConnection, sub: Subscription) -> dict[str, Any] | None:
    """The stage board (a stage subscription) or the event classification, as JSON data
    (`processor leaderboard --json`)."""
    plain = cast(asyncpg.Connection, conn)  # the leaderboard's reads take either
    try:
        if sub.stage is not None:
            board: Any = await read_stage_board(plain, sub.stage)
        else:
            assert sub.event is not None
            board = await read_event_board(plain, sub.event)
    except LeaderboardError:
        return None
    data: dict[str, Any] = msgspec.to_builtins(board)
    return data


async def read_geometry(conn: DbConnection, sub: Subscription) -> dict[str, Any]:
    """Routes (GeoJSON LineStrings) and geofences of the subscribed stage, or of every
    stage of the event."""
    stages = await conn.fetch(
        "SELECT id, name, sequence, route::text AS route FROM public.stages"
        " WHERE event = $1 AND ($2::int IS NULL OR id = $2) ORDER BY sequence, id",
        sub.event,
        sub.stage,
    )
    geofences = await conn.fetch(
        "SELECT id, stage, kind, name, geometry::text AS geometry, radius_m, sequence"
        " FROM public.geofences WHERE event = $1 AND ($2::int IS NULL OR stage = $2)"
        " ORDER BY sequence, id",
        sub.event,
        sub.stage,
    )
    return {
        "stages": [
            {
                "id": s["id"],
                "name": s["name"],
                "sequence": s["sequence"],
                "route": _json(s["route"]),
            }
            for s in stages
        ],
        "geofences": [
            {
                "id": g["id"],
                "stage": g["stage"],
                "kind": g["kind"],
                "name": g["name"],
                "geometry": _json(g["geometry"]),
                "radius_m": g["radius_m"],
            }
            for g in geofences
        ],
    }


async def read_rows(
    conn: DbConnection, sub: Subscription, scope: Scope
) -> dict[str, list[dict[str, Any]]]:
    """Penalties (and, for race control, the newest alerts) of the subscription."""
    rows: dict[str, list[dict[str, Any]]] = {}
    penalties = await conn.fetch(
        "SELECT to_jsonb(p)::text AS row FROM public.penalties p"
        " JOIN public.stages s ON s.id = p.stage"
        " WHERE s.event = $1 AND ($2::int IS NULL OR p.stage = $2) ORDER BY p.id LIMIT $3",
        sub.event,
        sub.stage,
        MAX_PENALTIES,
    )
    rows["penalties"] = [_row(r["row"], scope) for r in penalties]
    if scope is Scope.RACE_CONTROL:
        alerts = await conn.fetch(
            "SELECT to_jsonb(a)::text AS row FROM public.alerts a WHERE a.event = $1"
            " AND ($2::int IS NULL OR a.stage IS NULL OR a.stage = $2)"
            " ORDER BY a.started_at DESC, a.id DESC LIMIT $3",
            sub.event,
            sub.stage,
            MAX_ALERTS,
        )
        rows["alerts"] = [_row(r["row"], scope) for r in alerts]
    return rows


def entries_view(roster: Roster, sub: Subscription, scope: Scope) -> list[dict[str, Any]]:
    """The cars of the subscribed event: number, crew, class (and device for race control)."""
    out = []
    for e in sorted(roster.entries.values(), key=lambda e: (e.number, e.id)):
        if e.event != sub.event:
            continue
        item: dict[str, Any] = {
            "entry": e.id,
            "number": e.number,
            "crew": e.crew,
            "class": e.entry_class,
        }
        if scope is Scope.RACE_CONTROL:
            item["device"] = e.device
        out.append(item)
    return out


def _row(text: str, scope: Scope) -> dict[str, Any]:
    row: dict[str, Any] = json.loads(text)
    if scope is Scope.PUBLIC:
        row = {k: v for k, v in row.items() if k not in PRIVATE_FIELDS}
    return row


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)

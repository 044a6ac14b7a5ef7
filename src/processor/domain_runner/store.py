"""The domain's outputs: its own record of them, the rows it publishes, and the outbox.

Every automatic output (timing record, penalty, stage result, alert) is kept in
`telemetry.domain_outputs` under the key of the row it publishes in Directus's tables.
The stage reads its previous outputs there (indexed by entry, time and stage; the
Directus tables have no index it may add, ADR 0010), diffs them against a fresh
computation, and applies only the difference: to its record, to the published rows
(never touching `source = 'manual'` ones), and as one outbox event per change, all in
the caller's transaction. A recompute that changes nothing writes nothing.

Invariant: an output's `data` is its collection's row type (`processor.domain.rows`,
named by `tables.py`), read back typed and written as the same JSON, so the record, the
published rows and the outbox see one shape whatever wrote them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Generic, Literal, NamedTuple, TypeVar

import msgspec

from processor.domain.rows import Placing
from processor.storage.pool import DbConnection

Change = Literal["created", "updated", "deleted"]
ColumnType = Literal["int", "bigint", "text", "ts", "json"]
_encode = msgspec.json.encode
_decode = msgspec.json.decode
D = TypeVar("D", bound=msgspec.Struct)


class Output(msgspec.Struct, Generic[D], frozen=True):
    """One automatic output. `data` is the published row (`processor.domain.rows`)."""

    collection: str
    key: str
    event: int
    stage: int | None
    entry: int | None
    at_ms: int
    data: D


@dataclass(frozen=True)
class Collection(Generic[D]):
    """A collection of outputs and the type of its rows. `partial`: the row type is a
    part of the stored one (only its fields are read)."""

    name: str
    row: type[D]
    partial: bool = False

    @cached_property
    def decoder(self) -> msgspec.json.Decoder[D]:
        return msgspec.json.Decoder(self.row)

    @cached_property
    def data_sql(self) -> str:
        """The select-list item of `data`, as text (`o`: telemetry.domain_outputs)."""
        if not self.partial:
            return "o.data::text AS data"
        picked = ", ".join(f"'{f}', o.data->'{f}'" for f in self.row.__struct_fields__)
        return f"jsonb_build_object({picked})::text AS data"


@dataclass(frozen=True)
class Published(Collection[D]):
    """How one collection is published in Directus's schema: its table (`name`) and the
    columns of the row it publishes there."""

    columns: Mapping[str, ColumnType] = field(default_factory=dict)
    # SQL for SET of the upsert's columns not simply copied (e.g. alert status).
    overrides: Mapping[str, str] = field(default_factory=dict)
    # Fields of `row` naming the same thing across re-cuts (`recuts`): a crossing of one
    # gate, an alert of one kind. Empty: the key itself is stable.
    identity: tuple[str, ...] = ()


@dataclass
class Diff(Generic[D]):
    created: list[Output[D]] = field(default_factory=list)
    updated: list[Output[D]] = field(default_factory=list)
    deleted: list[Output[D]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.created or self.updated or self.deleted)

    def changes(self) -> Iterable[tuple[Output[D], Change]]:
        yield from ((o, "created") for o in self.created)
        yield from ((o, "updated") for o in self.updated)
        yield from ((o, "deleted") for o in self.deleted)


def _select(collection: Collection[Any]) -> str:
    return f"SELECT o.collection, o.key, o.event, o.stage, o.entry, o.at_ms, {collection.data_sql}"


def _outputs(collection: Collection[D], rows: Iterable[Any]) -> dict[str, Output[D]]:
    decode = collection.decoder.decode
    return {
        r["key"]: Output(
            r["collection"],
            r["key"],
            r["event"],
            r["stage"],
            r["entry"],
            r["at_ms"],
            decode(r["data"]),
        )
        for r in rows
    }


async def of_entry(
    conn: DbConnection,
    collection: Collection[D],
    entry: int,
    lo_ms: int,
    hi_ms: int,
    kinds: Sequence[str] | None = None,
) -> dict[str, Output[D]]:
    """Outputs of an entry with `lo_ms <= at_ms < hi_ms` (of these `kinds` only)."""
    sql = (
        f"{_select(collection)} FROM telemetry.domain_outputs o"
        " WHERE o.collection = $1 AND o.entry = $2 AND o.at_ms >= $3 AND o.at_ms < $4"
    )
    if kinds is None:
        rows = await conn.fetch(sql, collection.name, entry, lo_ms, hi_ms)
    else:
        sql += " AND o.data->>'kind' = ANY($5::text[])"
        rows = await conn.fetch(sql, collection.name, entry, lo_ms, hi_ms, list(kinds))
    return _outputs(collection, rows)


async def of_entries(
    conn: DbConnection,
    collection: Collection[D],
    spans: dict[int, tuple[int, int]],
    kinds: Sequence[str] | None = None,
) -> dict[int, dict[str, Output[D]]]:
    """`of_entry` for many entries at once: entry → (lo_ms, hi_ms)."""
    entries = sorted(spans)
    sql = (
        f"{_select(collection)}"
        " FROM unnest($2::int[], $3::bigint[], $4::bigint[]) AS w(e, lo, hi)"
        " JOIN telemetry.domain_outputs o ON o.collection = $1 AND o.entry = w.e"
        " AND o.at_ms >= w.lo AND o.at_ms < w.hi"
    )
    args: list[Any] = [
        collection.name,
        entries,
        [spans[e][0] for e in entries],
        [spans[e][1] for e in entries],
    ]
    if kinds is not None:
        sql += " AND o.data->>'kind' = ANY($5::text[])"
        args.append(list(kinds))
    rows = await conn.fetch(sql, *args)
    found: dict[int, dict[str, Output[D]]] = {e: {} for e in entries}
    for key, o in _outputs(collection, rows).items():
        found[o.entry or 0][key] = o
    return found


def merge(diffs: Iterable[Diff[D]]) -> Diff[D]:
    merged: Diff[D] = Diff()
    for d in diffs:
        merged.created += d.created
        merged.updated += d.updated
        merged.deleted += d.deleted
    return merged


Pair = tuple[int, int]  # (stage, entry)


async def of_pairs(
    conn: DbConnection, collection: Collection[D], pairs: Sequence[Pair]
) -> dict[Pair, dict[str, Output[D]]]:
    """Outputs of many (stage, entry) pairs in one query (of a partial collection, only
    its fields: a timing record's bracketing fixes and details are not what a result is
    computed from)."""
    unique = sorted(set(pairs))
    rows = await conn.fetch(
        f"{_select(collection)}"
        " FROM unnest($2::int[], $3::int[]) AS p(s, e)"
        " JOIN telemetry.domain_outputs o ON o.collection = $1 AND o.stage = p.s"
        " AND o.entry = p.e",
        collection.name,
        [s for s, _ in unique],
        [e for _, e in unique],
    )
    found: dict[Pair, dict[str, Output[D]]] = {p: {} for p in unique}
    for key, o in _outputs(collection, rows).items():
        found[(o.stage or 0, o.entry or 0)][key] = o
    return found


class Standing(msgspec.Struct, frozen=True):
    """What ranking needs of a stored stage result (not its splits and evidence)."""

    key: str
    entry: int
    status: str
    total_ms: int | None
    start_at: int | None
    rank: int | None
    class_rank: int | None
    gap_leader_ms: int | None
    gap_ahead_ms: int | None

    @property
    def placing(self) -> Placing:
        return (self.rank, self.class_rank, self.gap_leader_ms, self.gap_ahead_ms)


async def standings(conn: DbConnection, stage: int) -> list[Standing]:
    """The stage's stored results, light: ranking a stage of thousands of entries must
    not decode thousands of split lists."""
    rows = await conn.fetch(
        """
        SELECT key, entry, data->>'status' AS status, (data->>'total_ms')::bigint AS total_ms,
               (data->>'start_at')::bigint AS start_at, (data->>'rank')::int AS rank,
               (data->>'class_rank')::int AS class_rank,
               (data->>'gap_leader_ms')::bigint AS gap_leader_ms,
               (data->>'gap_ahead_ms')::bigint AS gap_ahead_ms
        FROM telemetry.domain_outputs WHERE collection = 'stage_results' AND stage = $1
        """,
        stage,
    )
    return [Standing(**dict(r)) for r in rows]


async def set_placings(
    conn: DbConnection, published: Published[D], placings: Sequence[tuple[Standing, Placing]]
) -> None:
    """Write new ranks and gaps (only those changed) to the record, the published rows
    and the outbox, without rewriting the rest of each result."""
    if not placings:
        return
    keys = [s.key for s, _ in placings]
    columns = list(zip(*(p for _, p in placings), strict=True))
    rows = await conn.fetch(
        """
        UPDATE telemetry.domain_outputs AS o SET data = o.data || jsonb_build_object(
            'rank', x.rank, 'class_rank', x.class_rank,
            'gap_leader_ms', x.gap_leader_ms, 'gap_ahead_ms', x.gap_ahead_ms)
        FROM unnest($1::text[], $2::int[], $3::int[], $4::bigint[], $5::bigint[])
             AS x(key, rank, class_rank, gap_leader_ms, gap_ahead_ms)
        WHERE o.collection = 'stage_results' AND o.key = x.key
        RETURNING o.collection, o.key, o.event, o.stage, o.entry, o.at_ms, o.data::text AS data
        """,
        keys,
        *columns,
    )
    written = await conn.fetch(
        f"""
        UPDATE public.{published.name} AS t SET rank = x.rank, class_rank = x.class_rank,
            gap_leader_ms = x.gap_leader_ms, gap_ahead_ms = x.gap_ahead_ms, updated_at = now()
        FROM unnest($1::text[], $2::int[], $3::int[], $4::bigint[], $5::bigint[])
             AS x(key, rank, class_rank, gap_leader_ms, gap_ahead_ms)
        WHERE t.key = x.key AND t.source <> 'manual'
        RETURNING t.key, t.id, to_jsonb(t)::text AS row
        """,
        keys,
        *columns,
    )
    done = {r["key"]: Written(r["id"], r["row"]) for r in written}
    outputs = _outputs(published, rows)
    await outbox(
        conn,
        [Event(o, "updated", *done[k]) for k, o in sorted(outputs.items()) if k in done],
    )


@dataclass
class Plan(Generic[D]):
    """A recomputation against the stored outputs it replaces: what `apply` writes."""

    old: Mapping[str, Output[D]]
    new: Sequence[Output[D]]
    diff: Diff[D]


def plan(old: Mapping[str, Output[D]], new: Sequence[Output[D]]) -> Plan[D]:
    return Plan(old, new, diff(old, new))


def diff(old: Mapping[str, Output[D]], new: Sequence[Output[D]]) -> Diff[D]:
    result: Diff[D] = Diff()
    seen = set()
    for o in new:
        seen.add(o.key)
        before = old.get(o.key)
        if before is None:
            result.created.append(o)
        elif before != o:
            result.updated.append(o)
    result.deleted = [o for k, o in old.items() if k not in seen]
    return result


async def apply(conn: DbConnection, published: Published[D], d: Diff[D]) -> Diff[D]:
    """Write a diff to the record, the published table and the outbox.

    A deleted output and a created one that are the same thing re-cut (equal
    `published.identity`, e.g. a crossing re-timed by a late fix) keep the published
    row: its key is changed in place, so its Directus id, its URL and what officials
    attached to it stay."""
    if not d:
        return d
    upserts = d.created + d.updated
    if upserts:
        await conn.execute(
            """
            INSERT INTO telemetry.domain_outputs AS o
                (collection, key, event, stage, entry, at_ms, data)
            SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::int[], $5::int[],
                                 $6::bigint[], $7::jsonb[])
            ON CONFLICT (collection, key) DO UPDATE SET
                event = EXCLUDED.event, stage = EXCLUDED.stage, entry = EXCLUDED.entry,
                at_ms = EXCLUDED.at_ms, data = EXCLUDED.data
            """,
            [o.collection for o in upserts],
            [o.key for o in upserts],
            [o.event for o in upserts],
            [o.stage for o in upserts],
            [o.entry for o in upserts],
            [o.at_ms for o in upserts],
            [_encode(o.data).decode() for o in upserts],
        )
    if d.deleted:
        await conn.execute(
            "DELETE FROM telemetry.domain_outputs WHERE collection = $1 AND key = ANY($2::text[])",
            d.deleted[0].collection,
            [o.key for o in d.deleted],
        )
    renamed = await _rename(conn, published, recuts(published, d))
    new_keys = {new: old for old, (new, _) in renamed.items()}
    gone = [o.key for o in d.deleted if o.key not in renamed]
    deleted_ids: dict[str, int] = {}
    if gone:
        rows = await conn.fetch(
            f"DELETE FROM public.{published.name}"
            " WHERE key = ANY($1::text[]) AND source <> 'manual' RETURNING key, id",
            gone,
        )
        deleted_ids = {r["key"]: r["id"] for r in rows}
    ids = await _publish(conn, published, upserts) if upserts else {}
    # A row's deletion is announced before its re-cut successor, so a subscriber that
    # follows keys and one that follows Directus ids both end on the row's state.
    events: list[Event] = []
    for o in d.deleted:
        if o.key in renamed:
            new_key, row_id = renamed[o.key]
            events.append(Event(o, "deleted", row_id, None, {"renamed_to": new_key}))
        elif o.key in deleted_ids:
            events.append(Event(o, "deleted", deleted_ids[o.key], None))
    for o, change in d.changes():
        if change == "deleted" or o.key not in ids:
            continue  # an official's row under this key: its changes are Directus's own
        if o.key in new_keys:
            extra = {"previous_key": new_keys[o.key]}
            events.append(Event(o, "updated", *ids[o.key], extra))
        else:
            events.append(Event(o, change, *ids[o.key]))
    await outbox(conn, events)
    return d


def recuts(published: Published[Any], d: Diff[Any]) -> list[tuple[Output[Any], Output[Any]]]:
    """Pairs (deleted, created) of outputs that are the same thing under a new key: equal
    identity, matched in time order. Pure."""
    if not published.identity or not d.deleted or not d.created:
        return []

    def identity(o: Output[Any]) -> tuple[Any, ...]:
        return tuple(getattr(o.data, f) for f in published.identity)

    created: dict[tuple[Any, ...], list[Output[Any]]] = {}
    for o in sorted(d.created, key=lambda o: (o.at_ms, o.key)):
        created.setdefault(identity(o), []).append(o)
    pairs = []
    for o in sorted(d.deleted, key=lambda o: (o.at_ms, o.key)):
        successors = created.get(identity(o))
        if successors:
            pairs.append((o, successors.pop(0)))
    return pairs


async def _rename(
    conn: DbConnection, published: Published[Any], pairs: list[tuple[Output[Any], Output[Any]]]
) -> dict[str, tuple[str, int]]:
    """Re-key the published rows of `pairs` (old key → new key) that are automatic and
    whose new key is free: old key → (new key, Directus id)."""
    if not pairs:
        return {}
    rows = await conn.fetch(
        f"""
        UPDATE public.{published.name} AS t SET key = x.new
        FROM unnest($1::text[], $2::text[]) AS x(old, new)
        WHERE t.key = x.old AND t.source <> 'manual'
          AND NOT EXISTS (SELECT 1 FROM public.{published.name} AS u WHERE u.key = x.new)
        RETURNING x.old, x.new, t.id
        """,
        [old.key for old, _ in pairs],
        [new.key for _, new in pairs],
    )
    return {r["old"]: (r["new"], r["id"]) for r in rows}


@dataclass(frozen=True)
class Event:
    """One change of one published row, as the outbox announces it."""

    output: Output[Any]
    change: Change
    row_id: int | None
    row: str | None  # the published row as written (JSON text), None when deleted
    extra: Mapping[str, Any] = field(default_factory=dict)


async def outbox(conn: DbConnection, events: Sequence[Event]) -> None:
    """Announce `events` (in this order) in the caller's transaction.

    A row's undelivered event is replaced by its newer one (coalescing at write: while
    Directus is down the outbox holds one event per changed row, not one per change); the
    replaced event's `created` is kept, so a row first announced now is announced as
    created. `created_at` is when the event is written (not the transaction's start: a
    batch's transaction may have been computing for a while), so delivery latency is
    measured from the change. The dispatcher is woken at commit (NOTIFY)."""
    if not events:
        return
    collection = events[0].output.collection
    keys = sorted({e.output.key for e in events})
    replaced = await conn.fetch(
        """
        DELETE FROM telemetry.outbox
        WHERE id IN (SELECT id FROM telemetry.outbox
                     WHERE delivered_at IS NULL AND collection = $1
                       AND row_key = ANY($2::text[])
                     ORDER BY id FOR UPDATE)
        RETURNING row_key, change
        """,
        collection,
        keys,
    )
    unannounced = {r["row_key"] for r in replaced if r["change"] == "created"}
    changes: list[Change] = []
    for e in events:
        change = e.change
        if e.output.key in unannounced and change != "deleted":
            change = "created"
        changes.append(change)
    await conn.execute(
        """
        INSERT INTO telemetry.outbox (collection, row_key, change, kind, payload, created_at)
        SELECT $1, x.k, x.c, $5::text || '.' || x.c, x.p::jsonb, clock_timestamp()
        FROM unnest($2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS x(k, c, p, n)
        ORDER BY x.n
        """,
        collection,
        [e.output.key for e in events],
        changes,
        [_encode(event_payload(e, c)).decode() for e, c in zip(events, changes, strict=True)],
        singular(collection),
    )
    await conn.execute("SELECT pg_notify($1, '')", OUTBOX_CHANNEL)


OUTBOX_CHANNEL = "processor_outbox"


def singular(collection: str) -> str:
    return {"penalties": "penalty", "stage_results": "stage_result"}.get(
        collection, collection.removesuffix("s")
    )


def event_payload(e: Event, change: Change) -> dict[str, Any]:
    """What subscribers receive (the dispatcher adds `version`, the outbox id): the
    Directus id and key of the row, its change and, unless deleted, the row exactly as
    written in Directus's table (an official's alert status included)."""
    o = e.output
    data = {} if change == "deleted" or e.row is None else {"data": msgspec.Raw(e.row.encode())}
    return {
        "collection": o.collection,
        "change": change,
        "id": e.row_id,
        "key": o.key,
        "event": o.event,
        "stage": o.stage,
        "entry": o.entry,
        **e.extra,
        **data,
    }


class Written(NamedTuple):
    """A published row as written: its Directus id and the row (JSON text)."""

    id: int
    row: str


async def _publish(
    conn: DbConnection, published: Published[D], rows: list[Output[D]]
) -> dict[str, Written]:
    """Upsert the published rows (never an official's): key → the rows written."""
    names = list(published.columns)
    casts = {"int": "int", "bigint": "bigint", "text": "text", "ts": "bigint", "json": "text"}
    arrays = ", ".join(
        f"${i}::{casts[published.columns[c]]}[]" for i, c in enumerate(names, start=2)
    )
    values = ", ".join(_value_sql(c, published.columns[c]) for c in names)
    updates = ", ".join(f"{c} = {published.overrides.get(c, f'EXCLUDED.{c}')}" for c in names)
    sql = f"""
        INSERT INTO public.{published.name} AS t (key, source, updated_at, {", ".join(names)})
        SELECT k, 'auto', now(), {values}
        FROM unnest($1::text[], {arrays}) AS r(k, {", ".join(names)})
        ON CONFLICT (key) DO UPDATE SET {updates}, updated_at = now()
        WHERE t.source <> 'manual'
        RETURNING t.key, t.id, to_jsonb(t)::text AS row
    """
    args: list[list[Any]] = [[o.key for o in rows]]
    for c in names:
        kind = published.columns[c]
        column = [getattr(o.data, c) for o in rows]
        if kind == "json":
            column = [None if v is None else _encode(v).decode() for v in column]
        args.append(column)
    return {r["key"]: Written(r["id"], r["row"]) for r in await conn.fetch(sql, *args)}


def _value_sql(name: str, kind: ColumnType) -> str:
    if kind == "ts":
        return f"to_timestamp(r.{name} / 1000.0)"
    if kind == "json":
        return f"r.{name}::json"
    return f"r.{name}"

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

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Generic, Literal, TypeVar

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
    await conn.execute(
        f"""
        UPDATE public.{published.name} AS t SET rank = x.rank, class_rank = x.class_rank,
            gap_leader_ms = x.gap_leader_ms, gap_ahead_ms = x.gap_ahead_ms, updated_at = now()
        FROM unnest($1::text[], $2::int[], $3::int[], $4::bigint[], $5::bigint[])
             AS x(key, rank, class_rank, gap_leader_ms, gap_ahead_ms)
        WHERE t.key = x.key AND t.source <> 'manual'
        """,
        keys,
        *columns,
    )
    await _outbox(conn, [(o, "updated") for o in _outputs(published, rows).values()], stored=True)


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


async def apply(
    conn: DbConnection, published: Published[D], d: Diff[D], *, rewritten: bool = False
) -> Diff[D]:
    """Write a diff to the record, the published table and the outbox. `rewritten`: its
    updates are stored outputs changed in place (not recomputed), as deletions always
    are: their outbox events are keyed by the stored form (`event_key`)."""
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
        await _publish(conn, published, upserts)
    if d.deleted:
        keys = [o.key for o in d.deleted]
        await conn.execute(
            "DELETE FROM telemetry.domain_outputs WHERE collection = $1 AND key = ANY($2::text[])",
            d.deleted[0].collection,
            keys,
        )
        await conn.execute(
            f"DELETE FROM public.{published.name}"
            " WHERE key = ANY($1::text[]) AND source <> 'manual'",
            keys,
        )
    await _outbox(conn, [(o, c) for o, c in d.changes() if c != "deleted"], stored=rewritten)
    await _outbox(conn, [(o, "deleted") for o in d.deleted], stored=True)
    return d


async def _outbox(
    conn: DbConnection, events: list[tuple[Output[Any], Change]], *, stored: bool
) -> None:
    if not events:
        return
    await conn.execute(
        """
        INSERT INTO telemetry.outbox (event_key, kind, payload)
        SELECT k, c, p::jsonb FROM unnest($1::text[], $2::text[], $3::text[]) AS x(k, c, p)
        ON CONFLICT (event_key) DO NOTHING
        """,
        [event_key(o, change, stored=stored) for o, change in events],
        [f"{singular(o.collection)}.{change}" for o, change in events],
        [_encode(event_payload(o, change)).decode() for o, change in events],
    )


def singular(collection: str) -> str:
    return {"penalties": "penalty", "stage_results": "stage_result"}.get(
        collection, collection.removesuffix("s")
    )


def event_key(o: Output[Any], change: Change, *, stored: bool = False) -> str:
    """The output's state is part of the key: the same change replayed adds nothing, a
    different one (a re-timed crossing, a new rank) is a new event.

    The digest is of the row's JSON as it is at hand: a fresh row's in its fields'
    order; a `stored` one's (read back from the record: a deletion, a rewrite in place)
    in the order PostgreSQL's jsonb keeps, as when stored rows were read untyped."""
    data = _encode(_jsonb_order(msgspec.to_builtins(o.data)) if stored else o.data)
    digest = hashlib.blake2b(data, digest_size=8).hexdigest()
    return f"{o.collection}:{o.key}:{change}:{digest}"


def _jsonb_order(value: Any) -> Any:
    """JSON with every object's keys as jsonb orders them: shorter first, then bytewise."""
    if isinstance(value, dict):
        order = sorted(value, key=lambda k: (len(k.encode()), k.encode()))
        return {k: _jsonb_order(value[k]) for k in order}
    if isinstance(value, list):
        return [_jsonb_order(v) for v in value]
    return value


def event_payload(o: Output[Any], change: Change) -> dict[str, Any]:
    return {
        "collection": o.collection,
        "change": change,
        "key": o.key,
        "event": o.event,
        "stage": o.stage,
        "entry": o.entry,
        **({} if change == "deleted" else {"data": o.data}),
    }


async def _publish(conn: DbConnection, published: Published[D], rows: list[Output[D]]) -> None:
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
    """
    args: list[list[Any]] = [[o.key for o in rows]]
    for c in names:
        kind = published.columns[c]
        column = [getattr(o.data, c) for o in rows]
        if kind == "json":
            column = [None if v is None else _encode(v).decode() for v in column]
        args.append(column)
    await conn.execute(sql, *args)


def _value_sql(name: str, kind: ColumnType) -> str:
    if kind == "ts":
        return f"to_timestamp(r.{name} / 1000.0)"
    if kind == "json":
        return f"r.{name}::json"
    return f"r.{name}"

"""`processor status`: the live system as Redis and PostgreSQL see it, without Prometheus.

An operator needs this when the metrics are not at hand (a fresh install, a laptop, an
incident where the scrape target is the thing that is down). So it reads only the two
stores, never the processor process, and every read is bounded so that it is safe to
run against a busy stream and a big positions table:

- Redis: XLEN, XINFO GROUPS / CONSUMERS, and the dead letters by reason over the newest
  `DLQ_SCAN_LIMIT` dead letters only.
- PostgreSQL, with a `statement_timeout` of `STATEMENT_TIMEOUT_MS`:
  the newest position (`max(ts)`: one probe of the ts index);
  the rate over the last minute, from an index range scan of the last two minutes of
  GPS time (the received_at figure is counted inside that range, so late uploads of
  older records are not in it);
  per-device freshness from a loose index scan (recursive skip-scan over the primary
  key's device_id, then one backward probe per device for its newest ts), capped at
  `FRESHNESS_DEVICE_LIMIT` devices: cost grows with devices, never with rows. On Citus
  (which runs a recursive CTE only with a filter on the distribution column) the same
  scan runs inside every shard (`run_command_on_shards`, in parallel) and is summed: a
  device lives in one shard, so the sums are exact.

A store that cannot be reached becomes an error line in the snapshot, not an exception:
the other store's half is still worth seeing during an outage.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError
from rich.columns import Columns
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from processor.core.settings import Settings, redact_url
from processor.storage.engine import distributed
from processor.stream.client import connect
from processor.tools.dlq import reasons

STATEMENT_TIMEOUT_MS = 5_000
STORE_TIMEOUT_S = 20.0  # a whole side (three statements, or the Redis reads) at most
DLQ_SCAN_LIMIT = 10_000
FRESHNESS_DEVICE_LIMIT = 10_000
RATE_WINDOW_S = 60
T = TypeVar("T")

NEWEST_SQL = """
SELECT max(ts) AS newest, extract(epoch FROM now() - max(ts))::float8 AS age_s
FROM telemetry.positions
"""

# One index range scan over the last two minutes of GPS time (future times included:
# the contract allows records up to a few minutes ahead of their received_at).
RATE_SQL = """
SELECT
    count(*) FILTER (WHERE ts > now() - interval '1 minute' AND ts <= now()) AS by_gps,
    count(*) FILTER (WHERE received_at > now() - interval '1 minute') AS by_received
FROM telemetry.positions
WHERE ts > now() - interval '2 minutes'
"""

# Loose index scan: each step jumps to the next device_id in the primary key, at most
# $1 steps; each device's newest ts is one backward probe of the same key.
FRESHNESS_SQL = """
WITH RECURSIVE ids(device_id, n) AS (
    (SELECT device_id, 1 FROM telemetry.positions ORDER BY device_id LIMIT 1)
    UNION ALL
    SELECT (SELECT p.device_id FROM telemetry.positions p
            WHERE p.device_id > ids.device_id ORDER BY p.device_id LIMIT 1),
           ids.n + 1
    FROM ids
    WHERE ids.device_id IS NOT NULL AND ids.n < $1
),
latest AS MATERIALIZED (
    SELECT (SELECT p.ts FROM telemetry.positions p
            WHERE p.device_id = ids.device_id ORDER BY p.ts DESC LIMIT 1) AS last_ts
    FROM ids
    WHERE ids.device_id IS NOT NULL
)
SELECT
    count(*) AS devices,
    count(*) FILTER (WHERE last_ts > now() - interval '10 seconds') AS under_10s,
    count(*) FILTER (WHERE last_ts <= now() - interval '10 seconds'
                       AND last_ts > now() - interval '1 minute') AS under_1m,
    count(*) FILTER (WHERE last_ts <= now() - interval '1 minute'
                       AND last_ts > now() - interval '10 minutes') AS under_10m,
    count(*) FILTER (WHERE last_ts <= now() - interval '10 minutes') AS older
FROM latest
"""


# Citus: the loose index scan above, per shard (%1$s: the shard's table), each shard's
# answer one JSON object, summed by FRESHNESS_CITUS_SQL. The cap is per shard.
_FRESHNESS_SHARD = f"""
WITH RECURSIVE ids(device_id, n) AS (
    (SELECT device_id, 1 FROM %1$s ORDER BY device_id LIMIT 1)
    UNION ALL
    SELECT (SELECT p.device_id FROM %1$s p
            WHERE p.device_id > ids.device_id ORDER BY p.device_id LIMIT 1),
           ids.n + 1
    FROM ids
    WHERE ids.device_id IS NOT NULL AND ids.n < {FRESHNESS_DEVICE_LIMIT}
),
latest AS MATERIALIZED (
    SELECT (SELECT p.ts FROM %1$s p
            WHERE p.device_id = ids.device_id ORDER BY p.ts DESC LIMIT 1) AS last_ts
    FROM ids
    WHERE ids.device_id IS NOT NULL
)
SELECT json_build_object(
    'devices', count(*),
    'under_10s', count(*) FILTER (WHERE last_ts > now() - interval '10 seconds'),
    'under_1m', count(*) FILTER (WHERE last_ts <= now() - interval '10 seconds'
                                   AND last_ts > now() - interval '1 minute'),
    'under_10m', count(*) FILTER (WHERE last_ts <= now() - interval '1 minute'
                                    AND last_ts > now() - interval '10 minutes'),
    'older', count(*) FILTER (WHERE last_ts <= now() - interval '10 minutes'))
FROM latest
"""
FRESHNESS_CITUS_SQL = """
WITH shard AS (
    SELECT success, result FROM run_command_on_shards('telemetry.positions', $1)
), ok AS (
    SELECT result::json AS r FROM shard WHERE success
)
SELECT
    (SELECT count(*) FROM shard WHERE NOT success) AS failed,
    (SELECT min(result) FROM shard WHERE NOT success) AS failure,
    coalesce(sum((r->>'devices')::int), 0) AS devices,
    coalesce(bool_or((r->>'devices')::int >= $2), false) AS capped,
    coalesce(sum((r->>'under_10s')::int), 0) AS under_10s,
    coalesce(sum((r->>'under_1m')::int), 0) AS under_1m,
    coalesce(sum((r->>'under_10m')::int), 0) AS under_10m,
    coalesce(sum((r->>'older')::int), 0) AS older
FROM ok
"""


class ConsumerStatus(msgspec.Struct, frozen=True):
    """One consumer of the group (XINFO CONSUMERS)."""

    name: str
    pending: int
    idle_ms: int  # since its last attempted interaction
    inactive_ms: int | None = None  # since its last successful read (Redis ≥ 7.2 only)


class GroupStatus(msgspec.Struct, frozen=True):
    """The processor's consumer group (XINFO GROUPS)."""

    name: str
    lag: int | None  # None: Redis cannot tell (entries deleted inside the group's range)
    entries_read: int | None
    last_delivered_id: str
    pending: int
    consumers: list[ConsumerStatus]


class RedisStatus(msgspec.Struct, frozen=True):
    stream_length: int
    group: GroupStatus | None  # None: no such group (nothing has consumed this stream)
    dlq_length: int
    dead_letters: dict[str, int]  # by reason, over the newest `dead_letters_scanned`
    dead_letters_scanned: int


class Freshness(msgspec.Struct, frozen=True):
    """Devices by the age of their newest stored position (GPS time)."""

    devices: int
    capped: bool  # the scan stopped at `FRESHNESS_DEVICE_LIMIT` devices
    scan_limit: int
    under_10s: int
    under_1m: int
    under_10m: int
    older: int


class DatabaseStatus(msgspec.Struct, frozen=True):
    newest_ts: datetime | None
    newest_age_s: float | None  # negative: ahead of the database clock
    per_second_gps: float | None
    per_second_received: float | None
    freshness: Freshness | None
    errors: list[str]  # statements that failed (timeout, missing table); the rest stand


class StatusSnapshot(msgspec.Struct, frozen=True):
    taken_at: datetime
    stream: str
    group: str
    dlq_stream: str
    redis: RedisStatus | None
    redis_error: str | None
    database: DatabaseStatus | None
    database_error: str | None

    @property
    def ok(self) -> bool:
        """Both stores answered every question."""
        return (
            self.redis_error is None
            and self.database_error is None
            and (self.database is None or not self.database.errors)
        )


# -- gathering ---------------------------------------------------------------------


async def gather_status(settings: Settings) -> StatusSnapshot:
    """Read both stores concurrently; a store that fails gives an error string instead."""
    redis_part, db_part = await asyncio.gather(
        _guard(_redis_status(settings), "Redis", settings.redis_url.get_secret_value()),
        _guard(_database_status(settings), "PostgreSQL", settings.database_url.get_secret_value()),
    )
    return StatusSnapshot(
        taken_at=datetime.now(UTC),
        stream=settings.stream,
        group=settings.group,
        dlq_stream=settings.dlq_stream,
        redis=redis_part[0],
        redis_error=redis_part[1],
        database=db_part[0],
        database_error=db_part[1],
    )


async def _guard(coro: Coroutine[Any, Any, T], store: str, url: str) -> tuple[T | None, str | None]:
    """Await with a deadline; an unreachable store becomes one readable line."""
    try:
        result = await asyncio.wait_for(coro, STORE_TIMEOUT_S)
    except TimeoutError:
        return None, f"{store} at {redact_url(url)}: no answer within {STORE_TIMEOUT_S:g} s"
    except (OSError, RedisError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        detail = str(exc).strip() or type(exc).__name__
        return None, f"{store} at {redact_url(url)}: {detail[:300]}"
    return result, None


async def _redis_status(settings: Settings) -> RedisStatus:
    redis = connect(settings)
    try:
        pipe = redis.pipeline(transaction=False)
        pipe.xlen(settings.stream)
        pipe.xinfo_groups(settings.stream)
        pipe.xlen(settings.dlq_stream)
        length, groups, dlq_length = await pipe.execute(raise_on_error=False)
        for reply in (length, dlq_length):
            if isinstance(reply, Exception):
                raise reply
        group = await _group_status(redis, settings, groups)
        by_reason = await reasons(redis, settings.dlq_stream, scan_limit=DLQ_SCAN_LIMIT)
    finally:
        await redis.aclose()
    return RedisStatus(
        stream_length=int(length),
        group=group,
        dlq_length=int(dlq_length),
        dead_letters=dict(sorted(by_reason.items())),
        dead_letters_scanned=min(int(dlq_length), DLQ_SCAN_LIMIT),
    )


async def _group_status(redis: Redis, settings: Settings, groups: Any) -> GroupStatus | None:
    """Our group from the XINFO GROUPS reply (an error reply: the stream does not exist)."""
    if isinstance(groups, ResponseError):
        return None
    if isinstance(groups, Exception):
        raise groups
    info = next((g for g in groups if _text(g.get("name")) == settings.group), None)
    if info is None:
        return None
    rows: Any = await redis.xinfo_consumers(settings.stream, settings.group)
    consumers = [
        ConsumerStatus(
            name=_text(row.get("name")),
            pending=int(row.get("pending") or 0),
            idle_ms=int(row.get("idle") or 0),
            inactive_ms=_optional_int(row.get("inactive")),
        )
        for row in rows
    ]
    consumers.sort(key=lambda c: (-c.pending, c.name))
    return GroupStatus(
        name=settings.group,
        lag=_optional_int(info.get("lag")),
        entries_read=_optional_int(info.get("entries-read")),
        last_delivered_id=_text(info.get("last-delivered-id")),
        pending=int(info.get("pending") or 0),
        consumers=consumers,
    )


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


async def _database_status(settings: Settings) -> DatabaseStatus:
    conn = await asyncpg.connect(
        settings.database_url.get_secret_value(),
        timeout=min(settings.db_connect_timeout_s, 5),
        command_timeout=STATEMENT_TIMEOUT_MS / 1000 + 2,
        server_settings={
            "application_name": "processor-status",
            "statement_timeout": str(STATEMENT_TIMEOUT_MS),
        },
    )
    errors: list[str] = []
    try:
        newest = await _query(conn, "newest position", NEWEST_SQL, errors)
        rate = await _query(conn, "rate", RATE_SQL, errors)
        fresh = await _fresh(conn, errors)
    finally:
        await conn.close()
    return DatabaseStatus(
        newest_ts=newest["newest"] if newest else None,
        newest_age_s=newest["age_s"] if newest else None,
        per_second_gps=rate["by_gps"] / RATE_WINDOW_S if rate else None,
        per_second_received=rate["by_received"] / RATE_WINDOW_S if rate else None,
        freshness=_freshness(fresh) if fresh else None,
        errors=errors,
    )


async def _query(
    conn: asyncpg.Connection, label: str, sql: str, errors: list[str], *args: object
) -> asyncpg.Record | None:
    """One statement; a server-side failure (timeout, missing table) is noted, not raised."""
    try:
        return await conn.fetchrow(sql, *args)
    except asyncpg.PostgresError as exc:
        errors.append(f"{label}: {type(exc).__name__}: {str(exc)[:200]}")
        return None


async def _fresh(conn: asyncpg.Connection, errors: list[str]) -> asyncpg.Record | None:
    """The freshness row, in the form the engine runs (the module docstring)."""
    try:
        citus = await distributed(conn)
    except asyncpg.PostgresError as exc:
        errors.append(f"freshness: {type(exc).__name__}: {str(exc)[:200]}")
        return None
    if not citus:
        return await _query(conn, "freshness", FRESHNESS_SQL, errors, FRESHNESS_DEVICE_LIMIT)
    row = await _query(
        conn, "freshness", FRESHNESS_CITUS_SQL, errors, _FRESHNESS_SHARD, FRESHNESS_DEVICE_LIMIT
    )
    if row is not None and row["failed"]:
        errors.append(f"freshness: {row['failed']} shard(s) failed: {str(row['failure'])[:200]}")
        return None
    return row


def _freshness(row: asyncpg.Record) -> Freshness:
    devices = int(row["devices"])
    capped = row.get("capped", devices >= FRESHNESS_DEVICE_LIMIT)
    return Freshness(
        devices=devices,
        capped=bool(capped),
        scan_limit=FRESHNESS_DEVICE_LIMIT,
        under_10s=int(row["under_10s"]),
        under_1m=int(row["under_1m"]),
        under_10m=int(row["under_10m"]),
        older=int(row["older"]),
    )


# -- rendering ---------------------------------------------------------------------


def to_json(snapshot: StatusSnapshot, *, indent: int = 2) -> str:
    """The snapshot as JSON (indent 0: one line, for `--watch --json`)."""
    encoded = msgspec.json.encode(snapshot)
    return msgspec.json.format(encoded, indent=indent).decode()


def render(snapshot: StatusSnapshot) -> RenderableType:
    """Everything in one renderable: a header, the Redis side, the PostgreSQL side.

    Narrow on purpose (one fact per row, short values): piped output is 80 columns.
    """
    header = Text.assemble(
        ("processor status", "bold"), f"  {snapshot.taken_at.strftime('%Y-%m-%d %H:%M:%S')} UTC"
    )
    parts: list[RenderableType] = [header]
    if snapshot.redis_error is not None:
        parts.append(Text(f"error: {snapshot.redis_error}", style="bold red"))
    elif snapshot.redis is not None:
        parts.extend(_render_redis(snapshot))
    if snapshot.database_error is not None:
        parts.append(Text(f"error: {snapshot.database_error}", style="bold red"))
    elif snapshot.database is not None:
        parts.append(_render_database(snapshot.database))
    return Group(*parts)


def _facts(title: str) -> Table:
    table = Table(
        title=title,
        title_justify="left",
        show_header=False,
        box=None,
        padding=(0, 2),
        min_width=len(title),  # a short table must not wrap its own title
    )
    table.add_column("what", style="dim", no_wrap=True)
    table.add_column("value", overflow="fold")
    return table


def _render_redis(snapshot: StatusSnapshot) -> list[RenderableType]:
    status = snapshot.redis
    assert status is not None
    table = _facts("Redis")
    table.add_row("stream", snapshot.stream)
    table.add_row("stream length", f"{status.stream_length:,}")
    group = status.group
    if group is None:
        table.add_row("group", f"{snapshot.group}: missing (nothing has read this stream yet)")
    else:
        table.add_row("group", group.name)
        table.add_row("group lag", "unknown" if group.lag is None else f"{group.lag:,}")
        entries_read = "unknown" if group.entries_read is None else f"{group.entries_read:,}"
        table.add_row("entries read", entries_read)
        table.add_row("last delivered id", group.last_delivered_id)
        table.add_row("pending", f"{group.pending:,}")
    table.add_row("dead letters", f"{status.dlq_length:,} in {snapshot.dlq_stream}")
    if status.dead_letters:
        table.add_row("  by reason", _items(f"{k} {v:,}" for k, v in status.dead_letters.items()))
    if status.dead_letters_scanned < status.dlq_length:
        table.add_row("", f"(by reason: newest {status.dead_letters_scanned:,} only)")
    out: list[RenderableType] = [Text(""), table]
    if group is not None and group.consumers:
        out.append(_render_consumers(group.consumers))
    return out


def _items(items: Iterable[str]) -> Columns:
    """Short items side by side, wrapped between items (never inside one): compact rows."""
    return Columns(list(items), padding=(0, 3))


def _render_consumers(consumers: list[ConsumerStatus]) -> Table:
    with_inactive = any(c.inactive_ms is not None for c in consumers)  # Redis ≥ 7.2
    table = Table(title="consumers", title_justify="left", box=None, padding=(0, 2))
    table.add_column("consumer", overflow="fold")
    table.add_column("pending", justify="right")
    table.add_column("idle", justify="right")
    if with_inactive:
        table.add_column("inactive", justify="right")
    for c in consumers:
        row = [c.name, f"{c.pending:,}", format_age(c.idle_ms / 1000)]
        if with_inactive:
            row.append("" if c.inactive_ms is None else format_age(c.inactive_ms / 1000))
        table.add_row(*row)
    return table


def _render_database(status: DatabaseStatus) -> Group:
    table = _facts("PostgreSQL (telemetry.positions)")
    if status.newest_ts is None:
        newest = "unknown" if status.errors else "no positions"
    else:
        newest = status.newest_ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"
        if status.newest_age_s is not None:
            newest += f" ({_relative(status.newest_age_s)})"
    table.add_row("newest position", newest)
    notes: list[str] = []
    if status.per_second_gps is not None and status.per_second_received is not None:
        table.add_row("positions/s", f"{status.per_second_gps:,.1f} by GPS time (last minute)")
        table.add_row("", f"{status.per_second_received:,.1f} by received_at (last minute) *")
        notes.append("* among positions with GPS time in the last 2 min (index-bounded)")
    fresh = status.freshness
    if fresh is not None:
        cap = f" (scan stopped at {fresh.scan_limit:,})" if fresh.capped else ""
        table.add_row("devices", f"{fresh.devices:,}{cap} †")
        buckets = (
            ("< 10 s", fresh.under_10s),
            ("10 s – 1 min", fresh.under_1m),
            ("1 – 10 min", fresh.under_10m),
            ("older", fresh.older),
        )
        table.add_row("  last report", _items(f"{k}: {v:,}" for k, v in buckets))
        notes.append(f"† loose index scan over device_id, at most {fresh.scan_limit:,} devices")
    parts: list[RenderableType] = [Text(""), table]
    parts.extend(Text(note, style="dim") for note in notes)
    parts.extend(Text(f"error: {e}", style="red") for e in status.errors)
    return Group(*parts)


def _relative(age_s: float) -> str:
    if age_s < 0:
        return f"{format_age(-age_s)} ahead of the database clock"
    return f"{format_age(age_s)} ago"


def format_age(seconds: float) -> str:
    """A short human age: 850 ms, 4.2 s, 3 min 10 s, 2 h 5 min, 3 d 4 h."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    if whole < 86_400:
        return f"{whole // 3600} h {whole % 3600 // 60} min"
    return f"{whole // 86_400} d {whole % 86_400 // 3600} h"


# -- the command -------------------------------------------------------------------


async def show_status(
    settings: Settings, console: Console, *, watch_s: float | None = None, as_json: bool = False
) -> int:
    """One snapshot (exit code 1 if a store failed), or refresh every `watch_s` until Ctrl-C.

    Live redraws only make sense on a terminal; piped, `--watch` appends one snapshot
    per interval (one JSON line each with `--json`) so the output stays a readable log.
    """
    if watch_s is None:
        snapshot = await gather_status(settings)
        _emit(console, snapshot, as_json=as_json, indent=2)
        return 0 if snapshot.ok else 1
    if as_json or not console.is_terminal:
        while True:
            _emit(console, await gather_status(settings), as_json=as_json, indent=0)
            await asyncio.sleep(watch_s)
    with Live(console=console, auto_refresh=False, transient=False) as live:
        while True:
            live.update(render(await gather_status(settings)), refresh=True)
            await asyncio.sleep(watch_s)


def _emit(console: Console, snapshot: StatusSnapshot, *, as_json: bool, indent: int) -> None:
    if as_json:
        # Straight to the file: JSON must not be wrapped or highlighted by rich.
        console.file.write(to_json(snapshot, indent=indent) + "\n")
        console.file.flush()
    else:
        console.print(render(snapshot))
        console.print()

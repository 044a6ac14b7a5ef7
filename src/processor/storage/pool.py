"""The asyncpg pool, with per-connection session settings and the COPY staging table.

Session settings are startup parameters, so they survive the `RESET ALL` a pool runs when
a connection is released; on Citus they include the coordinator's connection caching
(`citus.session_settings`), chosen from the database's engine before the pool connects.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import asyncpg.pool

from processor.core.settings import Settings
from processor.storage import citus
from processor.storage.engine import engine_of

STAGE_TABLE = "positions_stage"
# What code that runs queries accepts: a plain connection or one lent by a pool.
DbConnection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
_PG_EPOCH_MS = 946_684_800_000  # 2000-01-01T00:00:00Z, PostgreSQL's timestamp origin
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def _encode_timestamptz(ms: int) -> tuple[int]:
    return ((ms - _PG_EPOCH_MS) * 1000,)


def _decode_timestamptz(value: tuple[int]) -> datetime:
    return _PG_EPOCH + timedelta(microseconds=value[0])


async def install_codecs(conn: asyncpg.Connection) -> None:
    """timestamptz parameters as integer epoch milliseconds, straight to the wire format.

    Positions carry times as int ms; this skips building two datetimes per row.
    Results still come back as aware datetimes.
    """
    await conn.set_type_codec(
        "timestamptz",
        schema="pg_catalog",
        encoder=_encode_timestamptz,
        decoder=_decode_timestamptz,
        format="tuple",
    )


async def _prepare_connection(conn: asyncpg.Connection) -> None:
    await install_codecs(conn)
    # A temp table lives as long as its connection; ON COMMIT DELETE ROWS empties it
    # after each batch, so every batch starts from an empty stage.
    await conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {STAGE_TABLE} "
        "(LIKE telemetry.positions INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )


async def create_pool(settings: Settings, *, prepare_stage: bool = True) -> asyncpg.Pool:
    """A pool sized for the writer's batches in flight plus the health probe."""
    dsn = settings.database_url.get_secret_value()
    session = {
        "application_name": "processor",
        "statement_timeout": str(settings.db_statement_timeout_ms),
    }
    async with single_connection(dsn, settings.db_connect_timeout_s) as conn:
        if await engine_of(conn) == "citus":
            session.update(citus.session_settings(settings))
    pool = await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=max(settings.db_pool_size, settings.batches_in_flight + 1),
        timeout=settings.db_connect_timeout_s,
        command_timeout=settings.db_statement_timeout_ms / 1000 + 5,
        server_settings=session,
        init=_prepare_connection if prepare_stage else None,
    )
    assert pool is not None
    return pool


# A graceful close waits for the server's answer; a server that vanished without a FIN
# (a cut link, a dead proxy) never answers, so every close here has this deadline.
CLOSE_TIMEOUT_S = 5.0


async def close_bounded(conn: asyncpg.Connection, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
    """Close gracefully, or abort the socket past the deadline; never raises."""
    with contextlib.suppress(Exception):
        await conn.close(timeout=timeout_s)  # asyncpg aborts the connection on timeout
    if not conn.is_closed():
        conn.terminate()


async def close_pool_bounded(pool: asyncpg.Pool, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
    """Close the pool gracefully, or terminate its connections past the deadline."""
    try:
        await asyncio.wait_for(pool.close(), timeout_s)
    except Exception:
        pool.terminate()


@contextlib.asynccontextmanager
async def single_connection(dsn: str, timeout_s: float) -> AsyncIterator[asyncpg.Connection]:
    """One connection (connect with a deadline, close with a deadline): migrate, tools."""
    conn = await asyncpg.connect(dsn, timeout=timeout_s)
    try:
        yield conn
    finally:
        await close_bounded(conn)

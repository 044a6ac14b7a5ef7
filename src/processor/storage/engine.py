"""Which engine holds a migrated database's positions, as its migration ledger says.

A database's first migration fixes its mode for good (`migrate.decide_mode`), and the
ledger records it on every row, so the ledger is the one answer every component gets
alike — the writer's pool, the domain stage's clock, `processor status` — without
probing extensions. Queries that need another form on a distributed table ask here
(a query, so only where it runs per tick or per command, never per row or batch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # pool.py uses this module: no import of it at run time
    from processor.storage.pool import DbConnection

Engine = Literal["timescale", "citus", "plain"]
LEDGER = "telemetry.schema_migrations"


async def engine_of(conn: DbConnection) -> Engine | None:
    """The mode the database was migrated in; None before its first migration."""
    if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", LEDGER):
        return None
    mode = await conn.fetchval(f"SELECT mode FROM {LEDGER} ORDER BY version LIMIT 1")
    if mode not in ("timescale", "citus", "plain"):
        return None
    engine: Engine = mode
    return engine


async def distributed(conn: DbConnection) -> bool:
    """Whether positions are a Citus distributed table (the queries' other form)."""
    return await engine_of(conn) == "citus"

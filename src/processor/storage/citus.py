"""Citus (distributed PostgreSQL): whether this database is a cluster the processor can use,
and the session settings its connections need there.

In Citus mode `telemetry.positions` and `telemetry.position_attributes` are distributed by
`device_id` and co-located (migration 0010): every query the processor runs on them names
one device or a set of devices, so each is routed to the shards that hold them, and a
device's positions and attributes live on the same node. Everything else (the migration
ledger, the outbox, the domain's bookkeeping, Directus's `public` tables) stays a local
table on the coordinator: nothing joins them with positions, they are small, and they are
written in the domain stage's transactions, where a local write costs no network trip.

Invariants:
- Citus is used only when it is complete here: the extension is created in this database,
  the session is on the coordinator, and at least one worker is active. A database is
  never half-distributed by a start (the decision is `migrate.decide_mode`'s).
- Nothing here creates databases, extensions or nodes: a Citus database is the same
  database with the extension on every node, registered on the coordinator — an
  operator's job (docs/scaling.md), so `migrate --create-database` refuses on a server
  that runs Citus.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from processor.core.settings import Settings

if TYPE_CHECKING:  # pool.py uses this module: no import of it at run time
    from processor.storage.pool import DbConnection

MISSING = (
    "a Citus database needs the database and CREATE EXTENSION citus on the coordinator and"
    " on every worker, and the workers registered on the coordinator (citus_add_node);"
    " docs/scaling.md shows the steps"
)
CREATE_DATABASE_REFUSED = (
    "--create-database cannot make a Citus database: this server runs Citus, and "
    + MISSING
    + "; create it so, then run migrate without --create-database"
    " (or set PROCESSOR_DATABASE_MODE=plain for a database on this server alone)"
)


@dataclass(frozen=True)
class Cluster:
    """What this database says about Citus, read from catalogs and settings."""

    preloaded: bool  # the server loads the citus library (its settings exist)
    installed: bool  # CREATE EXTENSION citus was done in this database
    coordinator: bool  # this node is the coordinator (where the processor must connect)
    workers: int  # active worker nodes registered in this database
    version: str | None

    @property
    def usable(self) -> bool:
        return self.installed and self.preloaded and self.coordinator and self.workers > 0

    def why_not(self) -> str:
        """One line: what is missing for Citus mode (empty when it is usable)."""
        if not self.preloaded:
            return "the server does not load Citus (shared_preload_libraries)"
        if not self.installed:
            return f"the citus extension is not created in this database: {MISSING}"
        if self.workers == 0:
            return f"no active Citus worker is registered in this database: {MISSING}"
        if not self.coordinator:
            return (
                "this is a Citus worker, not the coordinator: point PROCESSOR_DATABASE_URL"
                " at the coordinator (every processor instance must use the same node)"
            )
        return ""


NO_CITUS = Cluster(preloaded=False, installed=False, coordinator=False, workers=0, version=None)


async def server_runs_citus(conn: DbConnection) -> bool:
    """Whether the server loads the citus library (its settings exist), in any database."""
    return bool(
        await conn.fetchval("SELECT count(*) FROM pg_settings WHERE name = 'citus.shard_count'")
    )


async def inspect(conn: DbConnection) -> Cluster:
    """The cluster as this database sees it; Citus functions are called only once the
    extension is created and loaded (elsewhere they do not exist)."""
    row = await conn.fetchrow(
        """SELECT
             EXISTS (SELECT 1 FROM pg_settings WHERE name = 'citus.shard_count') AS preloaded,
             (SELECT extversion FROM pg_extension WHERE extname = 'citus') AS version"""
    )
    assert row is not None
    preloaded, version = bool(row["preloaded"]), row["version"]
    if not (preloaded and version is not None):
        return Cluster(preloaded, version is not None, False, 0, version)
    coordinator = bool(await conn.fetchval("SELECT citus_is_coordinator()"))
    workers = int(await conn.fetchval("SELECT count(*) FROM citus_get_active_worker_nodes()"))
    return Cluster(preloaded, True, coordinator, workers, version)


def session_settings(settings: Settings) -> dict[str, str]:
    """What a processor session on the coordinator sets for itself (startup parameters).

    `citus.max_cached_conns_per_worker`: a multi-shard statement (every batch of positions
    touches every shard) opens up to one connection per shard of a worker, at most
    `citus.max_adaptive_executor_pool_size` (16). Citus keeps 1 per worker after a
    transaction by default and opens — with TLS — the others again for the next batch;
    measured here, that cost most of the throughput (docs/scaling.md). The processor's
    own sessions keep up to `PROCESSOR_CITUS_CACHED_CONNECTIONS`; only connections a
    statement opened are kept, so it never opens more than it used. Other clients of the
    database (Directus) keep the server's default.
    """
    return {"citus.max_cached_conns_per_worker": str(settings.citus_cached_connections)}

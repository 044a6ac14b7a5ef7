"""The asyncpg pool, with per-connection session settings and the COPY staging table."""

from __future__ import annotations

import asyncpg

from processor.core.settings import Settings

STAGE_TABLE = "positions_stage"


async def _prepare_connection(conn: asyncpg.Connection) -> None:
    # A temp table lives as long as its connection; ON COMMIT DELETE ROWS empties it
    # after each batch, so every batch starts from an empty stage.
    await conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {STAGE_TABLE} "
        "(LIKE telemetry.positions INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )


async def create_pool(settings: Settings, *, prepare_stage: bool = True) -> asyncpg.Pool:
    """A pool sized for the writer's batches in flight plus the health probe."""
    pool = await asyncpg.create_pool(
        settings.database_url.get_secret_value(),
        min_size=1,
        max_size=max(settings.db_pool_size, settings.batches_in_flight + 1),
        timeout=settings.db_connect_timeout_s,
        command_timeout=settings.db_statement_timeout_ms / 1000 + 5,
        server_settings={
            "application_name": "processor",
            "statement_timeout": str(settings.db_statement_timeout_ms),
        },
        init=_prepare_connection if prepare_stage else None,
    )
    assert pool is not None
    return pool

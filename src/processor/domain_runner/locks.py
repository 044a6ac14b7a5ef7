"""The domain stage's PostgreSQL advisory locks, in one place so every holder agrees.

A device's lock serializes everything written for its entries (the runner's windows,
the batch, the clock, `replay`/`recompute`); a stage's lock serializes its ranking and is
always taken after a device's. All are transaction-scoped but the clock's, which one
instance holds for a whole tick (several transactions). Several devices are locked in
one statement, in device order, so two batches never wait on each other in a cycle.
"""

from __future__ import annotations

from collections.abc import Iterable

from processor.storage.pool import DbConnection

_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"


async def lock_device(conn: DbConnection, device_id: str) -> None:
    await conn.execute(_LOCK, device_id)


async def try_lock_device(conn: DbConnection, device_id: str) -> bool:
    """The device's lock if free now (the clock skips a device busy with a window)."""
    return bool(
        await conn.fetchval("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))", device_id)
    )


async def lock_devices(conn: DbConnection, device_ids: Iterable[str]) -> None:
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(d, 0)) FROM unnest($1::text[]) AS d"
        " ORDER BY d",
        sorted(device_ids),
    )


async def lock_stage(conn: DbConnection, stage_id: int) -> None:
    await conn.execute(_LOCK, f"domain:stage:{stage_id}")


_CLOCK = "processor:domain:tick"


async def try_lock_clock(conn: DbConnection) -> bool:
    """The clock's session lock if free: one instance ticks at a time."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", _CLOCK))


async def unlock_clock(conn: DbConnection) -> None:
    await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", _CLOCK)

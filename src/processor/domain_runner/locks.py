"""The domain stage's PostgreSQL advisory locks, in one place so every holder agrees.

The one lock order, for every transaction of the domain stage (windows, batch parts,
the clock, `replay`/`recompute`, any number of `processor domain` instances):

1. device locks, all in one statement, sorted by device id (`lock_devices`; a single
   `lock_device` is the same with one device);
2. then stage locks, all in one statement, sorted by stage id (`lock_stages`);
3. then rows.

A device's lock guards every row of its entries (timing records, penalties, alerts);
a stage's lock guards every `stage_results` row of the stage, since its ranking updates
them all. So a transaction reads and writes results only after `lock_stages` for every
stage it touches, and takes no device lock after a stage lock: waits then always point
from a lower position in the order to a higher one, and no two holders can wait on
each other in a cycle. Each transaction locks its stages once (`Race.settle_many`);
`rank` re-takes a lock already held (a no-op) and alone in a transaction (the clock)
is step 2 without step 1.

All locks are transaction-scoped but the clock's, which one instance holds for a whole
tick (several transactions) and only ever tries (`pg_try_advisory_lock`: it never waits,
so it cannot close a cycle).
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
    """Every device lock the transaction needs, in device order, in one statement."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(d, 0))"
        " FROM unnest($1::text[]) WITH ORDINALITY AS t(d, n) ORDER BY n",
        sorted(set(device_ids)),
    )


def _stage_key(stage_id: int) -> str:
    return f"domain:stage:{stage_id}"


async def lock_stages(conn: DbConnection, stage_ids: Iterable[int]) -> None:
    """Every stage lock the transaction needs, in stage order, in one statement."""
    ordered = sorted(set(stage_ids))
    if ordered:
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(s, 0))"
            " FROM unnest($1::text[]) WITH ORDINALITY AS t(s, n) ORDER BY n",
            [_stage_key(s) for s in ordered],
        )


_CLOCK = "processor:domain:tick"


async def try_lock_clock(conn: DbConnection) -> bool:
    """The clock's session lock if free: one instance ticks at a time."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", _CLOCK))


async def unlock_clock(conn: DbConnection) -> None:
    await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", _CLOCK)

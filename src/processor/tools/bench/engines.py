"""The benchmark across engines: what counting inserts costs, and Citus beside plain.

1. `returning_cost`: the writer's statement (`INSERT … ON CONFLICT DO NOTHING RETURNING`,
   counted by a CTE — the only count that is right on Citus) against the same insert read
   from its command tag, in alternating rounds on the same rows and the same server; the
   ratio of their medians says what an exact count costs there.
2. `citus_section`: the writer (COPY staging, unnest) and the processor end to end on a
   scratch database spread over a Citus cluster (`--citus-url`, the coordinator's admin
   URL), in the same run as the plain figures, so their ratio compares like with like;
   the rows stored are checked against the positions sent (exact, not just fast).
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
from pydantic import SecretStr

from processor.core.position import Position
from processor.core.settings import Settings
from processor.storage.migrate import migrate
from processor.storage.pool import STAGE_TABLE, create_pool
from processor.storage.rows import COLUMNS, to_row
from processor.storage.writer import STAGE_INSERT, counted
from processor.tools.bench import cluster

Say = Callable[[str], None]
_COUNTED = counted(STAGE_INSERT)  # the writer's own statement
_TAGGED = f"{STAGE_INSERT} ON CONFLICT (device_id, ts) DO NOTHING"  # read from its tag


async def returning_cost(
    settings: Settings, positions: list[Position], repeats: int
) -> dict[str, float]:
    """Rows/s of the counted and the tag-read insert, one batch of `batch_max_rows` at a
    time on an emptied table: at least three rounds, the order swapped every round (the
    first run after a TRUNCATE is not favoured), compared by their medians."""
    rows = [to_row(p) for p in positions]
    size = settings.batch_max_rows
    rates: dict[str, list[float]] = {"counted": [], "tagged": []}
    pool = await create_pool(settings)
    try:
        for round_ in range(max(3, repeats)):
            kinds = ("tagged", "counted") if round_ % 2 == 0 else ("counted", "tagged")
            for kind in kinds:
                async with pool.acquire() as conn:
                    await conn.execute("TRUNCATE telemetry.positions")
                started = time.perf_counter()
                for i in range(0, len(rows), size):
                    async with pool.acquire() as conn, conn.transaction():
                        await conn.copy_records_to_table(
                            STAGE_TABLE, records=rows[i : i + size], columns=COLUMNS
                        )
                        if kind == "counted":
                            await conn.fetchval(_COUNTED)
                        else:
                            await conn.execute(_TAGGED)
                rates[kind].append(len(rows) / (time.perf_counter() - started))
    finally:
        await pool.close()
    counted, tagged = statistics.median(rates["counted"]), statistics.median(rates["tagged"])
    return {
        "counted_rows_per_s": counted,
        "tagged_rows_per_s": tagged,
        "counted_vs_tagged": counted / tagged,
        "rounds": float(len(rates["counted"])),
    }


# The plain run's own measurements, reused so both engines are measured alike.
WriteMethod = Callable[[Settings, asyncpg.Connection, list[Position], str], Awaitable[float]]
Drain = Callable[[Settings], Awaitable[dict[str, float]]]


async def citus_section(
    citus_admin_url: str,
    settings: Settings,
    positions: list[Position],
    repeats: int,
    write_method: WriteMethod,
    drain: Drain,
    say: Say,
) -> dict[str, float]:
    """The writer and the processor end to end on a scratch Citus database (figures
    named like the plain ones), with the cluster's shape and the stored-row check."""
    name = f"processor_bench_citus_{uuid.uuid4().hex[:10]}"
    say(f"Citus: a scratch database on every node of {cluster.coordinator_of(citus_admin_url)}")
    url = await cluster.create_database(name, citus_admin_url)
    here = settings.model_copy(update={"database_url": SecretStr(url)})
    try:
        conn = await asyncpg.connect(url)
        try:
            mode = (await migrate(conn, here)).mode
            if mode != "citus":
                raise RuntimeError(f"the Citus database migrated in {mode} mode")
            figures: dict[str, float] = {
                "workers": float(len(await cluster.workers(citus_admin_url))),
                "shards": float(
                    await conn.fetchval(
                        "SELECT count(*) FROM pg_dist_shard"
                        " WHERE logicalrelid = 'telemetry.positions'::regclass"
                    )
                ),
                "cached_connections": float(here.citus_cached_connections),
            }
            for method in ("copy", "unnest"):
                say(f"Citus: writer method {method}")
                rates = [await write_method(here, conn, positions, method) for _ in range(repeats)]
                figures[f"writer_{method}_rows_per_s"] = max(rates)
            say("Citus: processor, draining the same pre-filled stream")
            await conn.execute("TRUNCATE telemetry.positions")
            proc = await drain(here)
            figures["processor_positions_per_s"] = proc["positions_per_s"]
            figures["processor_inserted"] = proc["inserted"]
            figures["processor_cpu_s"] = proc["cpu_s"]
            stored = await conn.fetchval("SELECT count(*) FROM telemetry.positions")
            figures["stored_rows"] = float(stored)
            figures["unique_positions"] = float(len({(p.device_id, p.ts_ms) for p in positions}))
        finally:
            await conn.close()
    finally:
        await cluster.drop_database(name, citus_admin_url)
    return figures

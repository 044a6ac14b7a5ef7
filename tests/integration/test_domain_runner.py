"""The domain stage consumes committed notices on its own group, apart from the core."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis

from processor.core.settings import Settings
from processor.domain_runner.fixes import read_many, read_range
from processor.domain_runner.notices import Window
from processor.domain_runner.runner import DomainRunner, notice_settings
from processor.observability.metrics import Metrics
from processor.storage.pool import DbConnection, create_pool
from processor.stream.client import StreamClient, connect
from tests.entries import BASE_MS, entry
from tests.integration.test_pipeline import add_all, drain

pytestmark = pytest.mark.integration


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[Window, list[int]]] = []
        self.fail = fail

    async def __call__(self, conn: DbConnection, window: Window) -> None:
        if self.fail:
            raise RuntimeError("domain is broken")
        fixes = await read_range(conn, window.device_id, window.start_ms, window.end_ms)
        self.calls.append((window, [p.ts_ms for p in fixes]))


async def run_domain(
    settings: Settings,
    handler: Recorder,
    metrics: Metrics,
    until: Callable[[], bool] | None = None,
) -> None:
    """Until idle; with `until`, until it holds (or a loaded machine's deadline passes)."""
    domain_settings = notice_settings(settings)
    redis = connect(domain_settings)
    pool = await create_pool(settings)
    try:
        runner = DomainRunner(
            domain_settings, StreamClient(redis, domain_settings), pool, handler, metrics
        )
        if until is None:
            await asyncio.wait_for(runner.run(until_idle=True), 60)
        else:
            task = asyncio.create_task(runner.run())
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while loop.time() < deadline:
                if until():
                    break
                await asyncio.sleep(0.05)
            runner.stop()
            await asyncio.wait_for(task, 30)
    finally:
        await pool.close()
        await redis.aclose()


async def test_windows_cover_stored_positions_with_neighbours_and_late_data_recuts(
    settings: Settings, redis_client: aioredis.Redis, db: asyncpg.Connection
) -> None:
    await add_all(
        redis_client, settings.stream, [entry("D1", BASE_MS + s * 1000) for s in range(100)]
    )
    await drain(settings)
    first = Recorder()
    await run_domain(settings, first, Metrics())
    covered = sorted({ts for _, fixes in first.calls for ts in fixes})
    assert covered == [BASE_MS + s * 1000 for s in range(100)]

    await add_all(redis_client, settings.stream, [entry("D1", BASE_MS + 50_500)])
    await drain(settings)
    late = Recorder()
    await run_domain(settings, late, Metrics())
    assert late.calls == [
        (
            Window("D1", BASE_MS + 50_500, BASE_MS + 50_500),
            [BASE_MS + 50_000, BASE_MS + 50_500, BASE_MS + 51_000],
        )
    ]
    pending = await redis_client.xpending(settings.notice_stream, settings.domain_group)
    assert pending["pending"] == 0


async def test_core_stores_everything_while_the_domain_stage_fails(
    settings: Settings, redis_client: aioredis.Redis, db: asyncpg.Connection
) -> None:
    entries = [entry(f"F{d}", BASE_MS + s * 1000) for d in range(20) for s in range(250)]
    await add_all(redis_client, settings.stream, entries)
    domain_metrics = Metrics()
    core_done = asyncio.Event()

    def failed_while_core_ran() -> bool:  # both sides had their turn
        failures = domain_metrics.registry.get_sample_value("processor_domain_failures_total")
        return core_done.is_set() and (failures or 0) >= 1

    failing = asyncio.create_task(
        run_domain(settings, Recorder(fail=True), domain_metrics, until=failed_while_core_ran)
    )
    core_metrics = await drain(settings)
    core_done.set()
    await failing
    assert await db.fetchval("SELECT count(*) FROM telemetry.positions") == 5000
    assert (await redis_client.xpending(settings.stream, settings.group))["pending"] == 0
    assert core_metrics.registry.get_sample_value("processor_positions_inserted_total") == 5000
    assert (domain_metrics.registry.get_sample_value("processor_domain_failures_total") or 0) >= 1
    assert domain_metrics.registry.get_sample_value("processor_domain_notices_total") == 0
    # The failed notices are still there, pending for the domain group, to be retried.
    domain_pending = await redis_client.xpending(settings.notice_stream, settings.domain_group)
    assert domain_pending["pending"] > 0
    recovered = Recorder()
    await run_domain(settings, recovered, Metrics())
    devices = {w.device_id for w, _ in recovered.calls}
    assert devices == {f"F{d}" for d in range(20)}


async def test_the_batch_read_decodes_io_only_from_where_it_is_asked(
    settings: Settings, redis_client: aioredis.Redis, db: asyncpg.Connection
) -> None:
    await add_all(
        redis_client,
        settings.stream,
        [entry(d, BASE_MS + s * 1000) for d in ("D1", "D2") for s in range(6)],
    )
    await drain(settings)
    full = await read_range(db, "D1", BASE_MS, BASE_MS + 5_000)
    assert all(p.io for p in full)
    found = await read_many(
        db,
        {"D1": (BASE_MS, BASE_MS + 5_000), "D2": (BASE_MS + 1_000, BASE_MS + 2_000)},
        io_from={"D1": BASE_MS + 3_000},
    )
    assert [p.ts_ms for p in found["D1"]] == [p.ts_ms for p in full]
    # Before `io_from` the geometry only; from it on, the records as stored.
    assert [p.io for p in found["D1"]] == [{}, {}, {}] + [p.io for p in full[3:]]
    assert found["D1"][:3] == [msgspec.structs.replace(p, io={}) for p in full[:3]]
    # No `io_from` for a device: its whole span, IO included.
    assert [p.ts_ms for p in found["D2"]] == [BASE_MS + 1_000, BASE_MS + 2_000]
    assert all(p.io == full[0].io for p in found["D2"])

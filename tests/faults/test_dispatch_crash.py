"""`processor dispatch` killed with SIGKILL again and again while it delivers: every row's
last delivery is still its state, versions never go back, nothing is delivered twice
(Directus refuses a retried `event_key`, and the dispatcher counts it as delivered)."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
import redis
import redis.asyncio as aioredis

from processor.core.settings import Settings
from tests.faults.harness import ProcessorProcess, Spawner, wait_for
from tests.integration.fake_directus import fake_directus_thread
from tests.integration.test_dispatch import assert_directus_matches_rows
from tests.integration.test_domain_timing import feed, simulation

pytestmark = pytest.mark.faults

KILLS = 4


async def _race(settings: Settings) -> None:
    from tests.conftest import REDIS_URL

    redis = aioredis.Redis.from_url(REDIS_URL)
    try:
        await feed(settings, redis, list(simulation().entries()))
    finally:
        await redis.aclose()


def _undelivered(db: psycopg.Connection[tuple[object, ...]]) -> int:
    row = db.execute("SELECT count(*) FROM telemetry.outbox WHERE delivered_at IS NULL").fetchone()
    assert row is not None
    return int(str(row[0]))


def test_a_dispatcher_killed_mid_delivery_loses_and_doubles_nothing(
    fast: Settings,
    spawn: Spawner,
    sync_db: psycopg.Connection[tuple[object, ...]],
    sync_redis: redis.Redis,  # removes the test's stream keys afterwards
) -> None:
    sync_db.execute(
        "TRUNCATE public.timing_records, public.stage_results, public.penalties,"
        " public.alerts, telemetry.outbox, telemetry.position_attributes,"
        " telemetry.domain_outputs, telemetry.domain_progress"
    )
    sync_db.commit()
    asyncio.run(_load_and_feed(fast))
    total = _undelivered(sync_db)
    assert total > 50
    with fake_directus_thread(delay_s=0.02) as directus:

        def dispatcher(name: str) -> ProcessorProcess:
            return spawn(
                fast,
                name,
                "--until-empty",
                command="dispatch",
                directus_url=directus.url,
                directus_token=directus.token,
                dispatch_batch="4",
                dispatch_poll_s="0.2",
            )

        for kill in range(KILLS):
            proc = dispatcher(f"dispatch-{kill}")
            target = len(directus.items) + 5

            def delivered_more(target: int = target) -> bool:
                return len(directus.items) >= target

            assert wait_for(delivered_more, 60), proc.tail()
            proc.kill9()
            assert _undelivered(sync_db) > 0, "the kills came too late to matter"
        last = dispatcher("dispatch-last")
        assert last.wait(120) == 0, last.tail()
        assert _undelivered(sync_db) == 0
        items = list(directus.items)
    assert len({i["event_key"] for i in items}) == len(items)
    asyncio.run(_check(fast, items))


async def _load_and_feed(settings: Settings) -> None:
    import asyncpg

    from processor.tools.event_loader import load_event_rows, read_event_file

    conn = await asyncpg.connect(settings.database_url.get_secret_value())
    try:
        await load_event_rows(conn, read_event_file())
    finally:
        await conn.close()
    await _race(settings)


async def _check(settings: Settings, items: list[dict[str, Any]]) -> None:
    import asyncpg

    conn = await asyncpg.connect(settings.database_url.get_secret_value())
    try:
        assert await assert_directus_matches_rows(conn, items) > 0
    finally:
        await conn.close()

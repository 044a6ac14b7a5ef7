"""The outbox dispatcher against a real PostgreSQL and a stand-in Directus
(fake_directus.py): every change delivered once, in order per row, the last delivery of
every row equal to its state; an outage loses nothing and the outbox stays at one event
per changed row; a redelivery is refused by Directus and counted; one leader at a time."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from processor.core.settings import Settings
from processor.dispatch.dispatcher import Dispatcher
from processor.observability.metrics import Metrics
from processor.tools.event_loader import load_event_rows, read_event_file
from tests.integration.fake_directus import FakeDirectus
from tests.integration.outbox_checks import OUTPUT_TABLES
from tests.integration.test_domain_timing import feed, simulation

pytestmark = pytest.mark.integration


@pytest.fixture
async def race_db(db: asyncpg.Connection) -> asyncpg.Connection:
    await db.execute(
        "TRUNCATE public.timing_records, public.stage_results, public.penalties, public.alerts,"
        " telemetry.outbox, telemetry.position_attributes, telemetry.domain_outputs,"
        " telemetry.domain_progress"
    )
    await load_event_rows(db, read_event_file())
    return db


@pytest.fixture
async def directus() -> AsyncIterator[FakeDirectus]:
    fake = FakeDirectus()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


def dispatch_settings(settings: Settings, directus: FakeDirectus, **extra: Any) -> Settings:
    return settings.model_copy(
        update={
            "directus_url": directus.url,
            "directus_token": type(settings.directus_token)(directus.token),
            "dispatch_poll_s": 0.1,
            **extra,
        }
    )


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float = 60.0) -> None:
    """Poll a condition (a database state, a flag of another task) until it holds."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {check.__name__}")
        await asyncio.sleep(0.05)


async def undelivered(db: asyncpg.Connection) -> int:
    n: int = await db.fetchval("SELECT count(*) FROM telemetry.outbox WHERE delivered_at IS NULL")
    return n


def final_states(items: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """What a subscriber applying the items in order ends with, per (collection, key);
    checks on the way that versions only grow per row."""
    last: dict[tuple[str, str], dict[str, Any]] = {}
    for item in items:
        p = item["payload"]
        row = (p["collection"], p["key"])
        if row in last:
            assert p["version"] > last[row]["version"], f"{row}: version went back"
        last[row] = p
    return last


async def assert_directus_matches_rows(db: asyncpg.Connection, items: list[dict[str, Any]]) -> int:
    """Every automatic row's last delivery is the row; every other key's is `deleted`."""
    last = final_states(items)
    rows = 0
    for table in OUTPUT_TABLES:
        for r in await db.fetch(
            f"SELECT key, id, to_jsonb(t)::text AS row FROM public.{table} t WHERE source = 'auto'"
        ):
            p = last.pop((table, r["key"]))
            assert (p["change"], p["id"], p["data"]) != ("deleted", None, None)
            assert p["id"] == r["id"]
            assert p["data"] == json.loads(r["row"]), (table, r["key"])
            rows += 1
    assert {p["change"] for p in last.values()} <= {"deleted"}, "a gone row's last event"
    return rows


async def test_every_change_reaches_directus_once_and_in_order(
    settings: Settings,
    redis_client: aioredis.Redis,
    race_db: asyncpg.Connection,
    directus: FakeDirectus,
) -> None:
    await feed(settings, redis_client, list(simulation().entries()))
    committed = await undelivered(race_db)
    assert committed > 0
    metrics = Metrics()
    # Tiny batches: the per-row order must hold across rounds.
    d = Dispatcher(dispatch_settings(settings, directus, dispatch_batch=7), metrics)
    await asyncio.wait_for(d.run(until_empty=True), 60)
    assert await undelivered(race_db) == 0
    assert len(directus.keys) == len(directus.items), "a duplicate reached Directus"
    rows = await assert_directus_matches_rows(race_db, directus.items)
    assert rows > 0
    delivered = metrics.registry.get_sample_value(
        "processor_dispatch_events_total", {"result": "delivered"}
    )
    assert delivered == len(directus.items)
    assert metrics.registry.get_sample_value("processor_outbox_undelivered") == 0

    # A crash between Directus storing a batch and the outbox recording it: the same
    # versions are sent again, refused by event_key, counted, not doubled.
    await race_db.execute(
        "UPDATE telemetry.outbox SET delivered_at = NULL"
        " WHERE id IN (SELECT id FROM telemetry.outbox ORDER BY id DESC LIMIT 5)"
    )
    before = len(directus.items)
    await asyncio.wait_for(d.run(until_empty=True), 60)
    assert len(directus.items) == before
    assert (
        metrics.registry.get_sample_value("processor_dispatch_events_total", {"result": "already"})
        == 5
    )


async def test_an_outage_loses_nothing_and_the_outbox_holds_a_row_once(
    settings: Settings,
    redis_client: aioredis.Redis,
    race_db: asyncpg.Connection,
    directus: FakeDirectus,
) -> None:
    directus.status = 503
    metrics = Metrics()
    d = Dispatcher(dispatch_settings(settings, directus, retry_max_ms=200), metrics)
    task = asyncio.create_task(d.run())

    async def failing() -> bool:
        return d.failing is not None and directus.requests >= 3

    async def drained() -> bool:
        return d.failing is None and await undelivered(race_db) == 0

    try:
        await feed(settings, redis_client, list(simulation().entries()))
        await until(failing)
        assert d.status().startswith("failing for")
        assert "unavailable" in d.status()
        # Coalescing at write: at most one undelivered event per changed row.
        per_row = await race_db.fetchval(
            "SELECT max(n) FROM (SELECT count(*) AS n FROM telemetry.outbox"
            " WHERE delivered_at IS NULL GROUP BY collection, row_key) x"
        )
        assert per_row == 1
        assert directus.items == []
        directus.status = None  # Directus is back
        await until(drained)
    finally:
        d.stop()
        await asyncio.wait_for(task, 10)
    assert d.status() == "not running"
    failures = metrics.registry.get_sample_value(
        "processor_dispatch_failures_total", {"reason": "unavailable"}
    )
    assert failures is not None
    assert failures >= 2
    await assert_directus_matches_rows(race_db, directus.items)
    assert len(directus.keys) == len(directus.items)


async def test_one_dispatcher_delivers_and_another_takes_over(
    settings: Settings, race_db: asyncpg.Connection, directus: FakeDirectus
) -> None:
    s = dispatch_settings(settings, directus)
    first, second = Dispatcher(s, Metrics()), Dispatcher(s, Metrics())
    tasks = [asyncio.create_task(first.run()), asyncio.create_task(second.run())]

    async def one_leads() -> bool:
        return [first.leader, second.leader].count(True) == 1

    try:
        await until(one_leads)
        leader, standby = (first, second) if first.leader else (second, first)
        assert standby.status() == "standby"
        leader.stop()

        async def taken_over() -> bool:
            return standby.leader

        await until(taken_over)
        assert standby.status() == "ok"
    finally:
        first.stop()
        second.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)


async def test_delivered_events_are_pruned_after_the_retention(
    settings: Settings, race_db: asyncpg.Connection, directus: FakeDirectus
) -> None:
    await race_db.execute(
        "INSERT INTO telemetry.outbox (collection, row_key, change, kind, payload, delivered_at)"
        " SELECT 'alerts', 'k' || n, 'created', 'alert.created', '{}'::jsonb,"
        " now() - make_interval(hours => n) FROM generate_series(1, 10) n"
    )
    metrics = Metrics()
    d = Dispatcher(dispatch_settings(settings, directus, outbox_retention_s=5 * 3600), metrics)
    await asyncio.wait_for(d.run(until_empty=True), 30)
    left = await race_db.fetch("SELECT row_key FROM telemetry.outbox ORDER BY row_key")
    assert sorted(r["row_key"] for r in left) == sorted(f"k{n}" for n in range(1, 5))
    assert metrics.registry.get_sample_value("processor_outbox_pruned_total") == 6


async def test_a_directus_too_slow_for_big_batches_gets_smaller_ones(
    settings: Settings,
    redis_client: aioredis.Redis,
    race_db: asyncpg.Connection,
    directus: FakeDirectus,
) -> None:
    # Batches over 8 items are stored but answered after the client's deadline: each
    # timed-out batch is in Directus already, the next (halved) one overlaps it.
    await feed(settings, redis_client, list(simulation().entries()))
    directus.slow_above, directus.slow_s = 8, 2.0
    metrics = Metrics()
    s = dispatch_settings(settings, directus, dispatch_batch=64, dispatch_timeout_s=0.5)
    d = Dispatcher(s, metrics)
    await asyncio.wait_for(d.run(until_empty=True), 120)
    assert await undelivered(race_db) == 0
    assert len(directus.keys) == len(directus.items), "a duplicate reached Directus"
    await assert_directus_matches_rows(race_db, directus.items)
    sample = metrics.registry.get_sample_value
    assert (sample("processor_dispatch_failures_total", {"reason": "unreachable"}) or 0) >= 1
    assert (sample("processor_dispatch_events_total", {"result": "already"}) or 0) >= 1

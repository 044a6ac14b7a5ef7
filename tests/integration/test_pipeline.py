"""The core pipeline against the real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import random

import asyncpg
import pytest
import redis.asyncio as aioredis

from processor.app import open_pipeline
from processor.core.settings import Settings
from processor.observability.metrics import Metrics
from tests.entries import BASE_MS, bad_entry, entry, execute, read_stream

pytestmark = pytest.mark.integration


def counter(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(f"{name}_total", labels or None)
    return value or 0.0


async def add_all(
    redis: aioredis.Redis, stream: str, entries: list[dict[bytes, bytes]]
) -> list[str]:
    pipe = redis.pipeline(transaction=False)
    for fields in entries:
        pipe.xadd(stream, fields)  # type: ignore[arg-type]
    return [i.decode() for i in await pipe.execute()]


async def drain(settings: Settings, metrics: Metrics | None = None) -> Metrics:
    metrics = metrics or Metrics()
    async with open_pipeline(settings, metrics) as pipeline:
        assert await asyncio.wait_for(pipeline.run(until_idle=True), 60)
    return metrics


async def pending_count(redis: aioredis.Redis, settings: Settings) -> int:
    info = await redis.xpending(settings.stream, settings.group)
    return int(info["pending"])


async def until_rows(db: asyncpg.Connection, rows: int) -> None:
    """Poll until positions holds `rows` rows, or a deadline long enough for a loaded
    machine passes; the test's assertions that follow say what is wrong."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while loop.time() < deadline:
        if await db.fetchval("SELECT count(*) FROM telemetry.positions") == rows:
            return
        await asyncio.sleep(0.05)


async def test_every_entry_ends_as_row_duplicate_or_dead_letter(
    settings: Settings, redis_client: aioredis.Redis, db: asyncpg.Connection
) -> None:
    good = [entry(f"DEV{d}", BASE_MS + s * 1000) for d in range(20) for s in range(100)]
    dups = good[:150]
    bad = [bad_entry("version"), bad_entry("json"), bad_entry("missing")] * 5
    mixed = good + dups + bad
    random.Random(7).shuffle(mixed)
    await add_all(redis_client, settings.stream, mixed)

    metrics = await drain(settings)

    assert await db.fetchval("SELECT count(*) FROM telemetry.positions") == 2000
    inserted = counter(metrics, "processor_positions_inserted")
    duplicates = counter(metrics, "processor_duplicates", stage="state") + counter(
        metrics, "processor_duplicates", stage="database"
    )
    rejected = sum(
        counter(metrics, "processor_rejections", reason=r)
        for r in ("unsupported_version", "malformed_json", "missing_field")
    )
    assert (inserted, duplicates, rejected) == (2000, 150, 15)
    assert inserted + duplicates + rejected == len(mixed)
    assert await pending_count(redis_client, settings) == 0
    assert await redis_client.xlen(settings.dlq_stream) == 15


async def test_stored_values_match_the_entry(
    settings: Settings, redis_client: aioredis.Redis, db: asyncpg.Connection
) -> None:
    ids = await add_all(redis_client, settings.stream, [entry("A1", BASE_MS, speed=54.5)])
    await drain(settings)
    row = await db.fetchrow("SELECT * FROM telemetry.positions")
    assert row is not None
    assert row["device_id"] == "A1"
    assert row["stream_id"] == ids[0]
    assert row["speed"] == pytest.approx(54.5)
    assert row["fix_valid"] is True
    assert row["codec"] == "8E"
    assert row["ts"].timestamp() * 1000 == BASE_MS
    io = await db.fetchval("SELECT io::text FROM telemetry.positions")
    assert io == '{"11": 8944100000000000000, "239": 1, "385": "010203"}'


async def test_out_of_order_and_resent_records_first_wins(
    settings: Settings, redis_client: aioredis.Redis, db: asyncpg.Connection
) -> None:
    first = [entry("OOO", BASE_MS + s * 1000, speed=10) for s in range(200)]
    random.Random(3).shuffle(first)
    resent = [entry("OOO", BASE_MS + s * 1000, speed=99) for s in range(0, 200, 2)]
    await add_all(redis_client, settings.stream, first + resent)
    metrics = await drain(settings)
    assert await db.fetchval("SELECT count(*) FROM telemetry.positions") == 200
    assert await db.fetchval("SELECT count(*) FROM telemetry.positions WHERE speed = 99") == 0
    assert counter(metrics, "processor_late_positions") > 0
    assert counter(metrics, "processor_duplicates", stage="state") == 100


async def test_restart_replays_are_counted_as_database_duplicates(
    settings: Settings, redis_client: aioredis.Redis, db: asyncpg.Connection
) -> None:
    entries = [entry("REP", BASE_MS + s * 1000) for s in range(50)]
    await add_all(redis_client, settings.stream, entries)
    await drain(settings)
    # A second stream replaying the same records (e.g. a requeue) goes to the database key.
    await add_all(redis_client, settings.stream, entries)
    metrics = await drain(settings)
    assert await db.fetchval("SELECT count(*) FROM telemetry.positions") == 50
    assert counter(metrics, "processor_duplicates", stage="database") == 50


async def test_poison_entry_over_max_deliveries_is_dead_lettered(
    settings: Settings, redis_client: aioredis.Redis, db: asyncpg.Connection
) -> None:
    ids = await add_all(
        redis_client, settings.stream, [entry("P1", BASE_MS), entry("P1", BASE_MS + 1000)]
    )
    await redis_client.xgroup_create(settings.stream, settings.group, id="0")
    # As if this consumer had crashed on it max_deliveries times already.
    await redis_client.xreadgroup(
        settings.group, settings.consumer, {settings.stream: ">"}, count=1
    )
    await execute(
        redis_client,
        "XCLAIM",
        settings.stream,
        settings.group,
        settings.consumer,
        0,
        ids[0],
        "RETRYCOUNT",
        settings.max_deliveries,
    )
    await drain(settings)
    assert await db.fetchval("SELECT count(*) FROM telemetry.positions") == 1
    letters = await read_stream(redis_client, settings.dlq_stream)
    assert len(letters) == 1
    fields = letters[0][1]
    assert fields[b"reason"] == b"max_deliveries"
    assert fields[b"source_id"] == ids[0].encode()
    assert fields[b"payload"] == entry("P1", BASE_MS)[b"payload"]
    assert int(fields[b"deliveries"]) == settings.max_deliveries + 1
    assert await pending_count(redis_client, settings) == 0


async def test_row_level_database_error_dead_letters_only_that_entry(
    settings: Settings, redis_client: aioredis.Redis, db: asyncpg.Connection
) -> None:
    await db.execute(
        "ALTER TABLE telemetry.positions ADD CONSTRAINT test_poison CHECK (device_id <> 'POISON')"
    )
    try:
        entries = [entry(f"ROW{i % 7}", BASE_MS + i * 1000) for i in range(300)]
        entries.insert(123, entry("POISON", BASE_MS))
        ids = await add_all(redis_client, settings.stream, entries)
        metrics = await drain(settings)
    finally:
        await db.execute("ALTER TABLE telemetry.positions DROP CONSTRAINT test_poison")
    assert await db.fetchval("SELECT count(*) FROM telemetry.positions") == 300
    letters = await read_stream(redis_client, settings.dlq_stream)
    assert [f[b"reason"] for _, f in letters] == [b"storage_rejected"]
    assert letters[0][1][b"source_id"] == ids[123].encode()
    assert b"23514" in letters[0][1][b"detail"]
    assert letters[0][1][b"payload"] == entries[123][b"payload"]
    assert counter(metrics, "processor_dead_letters", reason="storage_rejected") == 1
    assert await pending_count(redis_client, settings) == 0


async def test_two_consumers_share_the_load(
    settings: Settings, redis_client: aioredis.Redis, db: asyncpg.Connection
) -> None:
    entries = [entry(f"TWO{d}", BASE_MS + s * 1000) for d in range(10) for s in range(500)]
    await add_all(redis_client, settings.stream, entries)
    a = settings.model_copy(update={"consumer": "a", "read_count": 100})
    b = settings.model_copy(update={"consumer": "b", "read_count": 100})
    ma, mb = Metrics(), Metrics()
    await asyncio.gather(drain(a, ma), drain(b, mb))
    assert await db.fetchval("SELECT count(*) FROM telemetry.positions") == 5000
    read_a = counter(ma, "processor_entries_read", source="new")
    read_b = counter(mb, "processor_entries_read", source="new")
    assert read_a + read_b == 5000
    assert read_a > 0
    assert read_b > 0
    assert await pending_count(redis_client, settings) == 0


async def test_entries_of_a_dead_consumer_are_claimed(
    settings: Settings, redis_client: aioredis.Redis, db: asyncpg.Connection
) -> None:
    fast = settings.model_copy(update={"claim_idle_ms": 300})
    await add_all(redis_client, fast.stream, [entry("CLM", BASE_MS + s * 1000) for s in range(30)])
    await redis_client.xgroup_create(fast.stream, fast.group, id="0")
    await redis_client.xreadgroup(fast.group, "ghost", {fast.stream: ">"}, count=30)
    metrics = Metrics()
    async with open_pipeline(fast, metrics) as pipeline:
        task = asyncio.create_task(pipeline.run())
        await until_rows(db, 30)
        pipeline.stop()
        assert await task
    assert await db.fetchval("SELECT count(*) FROM telemetry.positions") == 30
    assert counter(metrics, "processor_claimed") == 30
    assert await pending_count(redis_client, fast) == 0


async def test_trimmed_pending_entries_are_counted_and_acked(
    settings: Settings, redis_client: aioredis.Redis, db: asyncpg.Connection
) -> None:
    await add_all(redis_client, settings.stream, [entry("TRM", BASE_MS + s) for s in range(10)])
    await redis_client.xgroup_create(settings.stream, settings.group, id="0")
    await redis_client.xreadgroup(
        settings.group, settings.consumer, {settings.stream: ">"}, count=10
    )
    await redis_client.xtrim(settings.stream, maxlen=0)
    metrics = await drain(settings)
    assert counter(metrics, "processor_trimmed_pending") == 10
    assert await pending_count(redis_client, settings) == 0
    assert await db.fetchval("SELECT count(*) FROM telemetry.positions") == 0


async def test_lost_group_is_recreated_from_zero(
    settings: Settings, redis_client: aioredis.Redis, db: asyncpg.Connection
) -> None:
    await add_all(
        redis_client, settings.stream, [entry("GRP", BASE_MS + s * 1000) for s in range(20)]
    )
    metrics = Metrics()
    async with open_pipeline(settings, metrics) as pipeline:
        task = asyncio.create_task(pipeline.run())
        await until_rows(db, 20)
        await redis_client.xgroup_destroy(settings.stream, settings.group)
        await add_all(redis_client, settings.stream, [entry("GRP", BASE_MS + 10**6)])
        await until_rows(db, 21)
        pipeline.stop()
        assert await task
    assert counter(metrics, "processor_group_recreated") >= 1
    assert await db.fetchval("SELECT count(*) FROM telemetry.positions") == 21
    assert counter(metrics, "processor_duplicates", stage="state") == 20

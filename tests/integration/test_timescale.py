"""TimescaleDB mode on a real TimescaleDB: hypertables, compression, retention, policies.

Skipped, with the reason, when the server under test (TEST_DATABASE_ADMIN_URL) has no
usable TimescaleDB; `.ci/run` runs the suite a second time against one when it finds it.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from processor.core.settings import Settings, load_settings
from processor.observability.metrics import Metrics
from processor.observability.sampler import sample_jobs_once
from processor.storage.migrate import MigrationReport, migrate
from processor.storage.pool import DbConnection, create_pool
from tests.entries import BASE_MS, entry
from tests.integration.test_pipeline import add_all, counter, drain

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("needs_timescale")]

DAY_MS = 86_400_000
TABLES = ("positions", "position_attributes")


async def _migrate(url: str, **overrides: Any) -> MigrationReport:
    conn = await asyncpg.connect(url)
    try:
        return await migrate(conn, load_settings(database_url=url, **overrides))
    finally:
        await conn.close()


async def _jobs(conn: DbConnection) -> dict[tuple[str, str], asyncpg.Record]:
    rows = await conn.fetch(
        "SELECT job_id, proc_name, hypertable_name, config, schedule_interval"
        " FROM timescaledb_information.jobs WHERE hypertable_schema = 'telemetry'"
    )
    return {(r["hypertable_name"], r["proc_name"]): r for r in rows}


async def _run_job(conn: DbConnection, job_id: int) -> None:
    """Run a job now, in the foreground (job_stats counts only the scheduler's runs)."""
    await conn.execute(f"CALL run_job({int(job_id)})")


async def _job_stat(conn: DbConnection, job_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT coalesce(total_runs, 0) AS total_runs,"
        " coalesce(total_successes, 0) AS total_successes,"
        " coalesce(total_failures, 0) AS total_failures"
        " FROM timescaledb_information.job_stats WHERE job_id = $1",
        job_id,
    )


async def _total_runs(conn: DbConnection, job_id: int) -> int:
    stat = await _job_stat(conn, job_id)
    return int(stat["total_runs"]) if stat else 0


async def _run_by_scheduler(conn: DbConnection, job_id: int, timeout_s: float = 90) -> None:
    """Have TimescaleDB's scheduler run the job now, and wait until a run has succeeded.

    A run can fail to launch when the server's background workers are all busy (many
    databases with TimescaleDB on one server): the scheduler retries it, and so do we.
    """
    stat = await _job_stat(conn, job_id)
    before = int(stat["total_successes"]) if stat else 0
    await conn.execute("SELECT alter_job($1, next_start => now())", job_id)
    async with asyncio.timeout(timeout_s):
        while True:
            stat = await _job_stat(conn, job_id)
            if stat is not None and stat["total_successes"] > before:
                return
            await asyncio.sleep(0.2)


async def _chunks(conn: asyncpg.Connection, table: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT chunk_name, range_start, is_compressed FROM timescaledb_information.chunks"
        " WHERE hypertable_schema = 'telemetry' AND hypertable_name = $1 ORDER BY range_start",
        table,
    )


async def test_positions_and_attributes_are_hypertables_with_the_settings(
    db: asyncpg.Connection,
) -> None:
    dims = await db.fetch(
        "SELECT hypertable_name, column_name, time_interval FROM timescaledb_information.dimensions"
        " WHERE hypertable_schema = 'telemetry' ORDER BY hypertable_name"
    )
    assert {(d["hypertable_name"], d["column_name"], d["time_interval"]) for d in dims} == {
        (table, "ts", timedelta(days=1)) for table in TABLES
    }
    settings = await db.fetch(
        "SELECT hypertable::text AS t, segmentby, orderby"
        " FROM timescaledb_information.hypertable_compression_settings"
        " WHERE hypertable::text LIKE 'telemetry.%'"
    )
    assert {(s["t"], s["segmentby"], s["orderby"]) for s in settings} == {
        (f"telemetry.{table}", "device_id", "ts DESC") for table in TABLES
    }
    modes = await db.fetch("SELECT DISTINCT mode FROM telemetry.schema_migrations")
    assert [m["mode"] for m in modes] == ["timescale"]


async def test_compressed_chunk_takes_duplicates_and_late_keys_exactly_once(
    settings: Settings, redis_client: aioredis.Redis, db: asyncpg.Connection
) -> None:
    old = BASE_MS - 40 * DAY_MS  # well past compress_after (7 days)
    first = [entry(f"TS{d}", old + s * 1000) for d in range(5) for s in range(600)]
    await add_all(redis_client, settings.stream, first)
    await drain(settings)
    assert await db.fetchval("SELECT count(*) FROM telemetry.positions") == 3000

    job = (await _jobs(db))[("positions", "policy_compression")]
    await _run_job(db, job["job_id"])
    chunks = await _chunks(db, "positions")
    assert chunks
    assert all(c["is_compressed"] for c in chunks), chunks

    resent = first[::3]  # re-sent by tcp-ingestion after a reconnect
    late = [entry(f"TS{d}", old + 700_000 + s * 1000) for d in range(5) for s in range(20)]
    await add_all(redis_client, settings.stream, resent + late)
    metrics = await drain(settings)

    assert counter(metrics, "processor_duplicates", stage="database") == len(resent)
    assert counter(metrics, "processor_positions_inserted") == len(late)
    assert await db.fetchval("SELECT count(*) FROM telemetry.positions") == 3000 + len(late)
    distinct = await db.fetchval(
        "SELECT count(*) FROM (SELECT DISTINCT device_id, ts FROM telemetry.positions) d"
    )
    assert distinct == 3000 + len(late)  # nothing stored twice, compressed or not
    assert all(c["is_compressed"] for c in await _chunks(db, "positions"))


async def test_attribute_upserts_reach_into_a_compressed_chunk(db: asyncpg.Connection) -> None:
    await db.execute("DELETE FROM telemetry.position_attributes WHERE device_id LIKE 'TA%'")
    await db.execute(
        "INSERT INTO telemetry.position_attributes (device_id, ts, attributes, mapping_version)"
        " SELECT 'TA' || d, now() - interval '30 days' + s * interval '1 second',"
        " '{\"a\": 1}', 'v1'"
        " FROM generate_series(1, 3) d, generate_series(1, 200) s"
    )
    job = (await _jobs(db))[("position_attributes", "policy_compression")]
    await _run_job(db, job["job_id"])
    assert any(c["is_compressed"] for c in await _chunks(db, "position_attributes"))
    changed = await db.execute(
        "INSERT INTO telemetry.position_attributes (device_id, ts, attributes, mapping_version)"
        " SELECT device_id, ts, '{\"a\": 2}', 'v2' FROM telemetry.position_attributes"
        " WHERE device_id = 'TA1'"
        " ON CONFLICT (device_id, ts) DO UPDATE SET attributes = EXCLUDED.attributes,"
        " mapping_version = EXCLUDED.mapping_version"
    )
    assert changed == "INSERT 0 200"
    rows = await db.fetch(
        "SELECT device_id, mapping_version, count(*) AS n FROM telemetry.position_attributes"
        " WHERE device_id LIKE 'TA%' GROUP BY 1, 2 ORDER BY 1"
    )
    assert [(r["device_id"], r["mapping_version"], r["n"]) for r in rows] == [
        ("TA1", "v2", 200),
        ("TA2", "v1", 200),
        ("TA3", "v1", 200),
    ]


async def test_retention_drops_old_chunks_of_both_tables(scratch_url: str) -> None:
    await _migrate(scratch_url, timescale_retention="30 days")
    conn = await asyncpg.connect(scratch_url)
    try:
        for table, extra in (
            ("positions", ", received_at, latitude, longitude, fix_valid, stream_id"),
            ("position_attributes", ", attributes, mapping_version"),
        ):
            values = {
                "positions": ", now(), 54.6, 25.2, true, '0-1'",
                "position_attributes": ", '{}', 'v1'",
            }[table]
            await conn.execute(
                f"INSERT INTO telemetry.{table} (device_id, ts{extra})"
                f" SELECT 'R1', now() - d * interval '1 day'{values}"
                " FROM unnest(ARRAY[90, 60, 2, 1]) d"
            )
        jobs = await _jobs(conn)
        for table in TABLES:
            assert len(await _chunks(conn, table)) == 4
            await _run_job(conn, jobs[(table, "policy_retention")]["job_id"])
            kept = await conn.fetchval(
                f"SELECT count(*) FROM telemetry.{table} WHERE ts > now() - interval '30 days'"
            )
            assert kept == 2
            assert await conn.fetchval(f"SELECT count(*) FROM telemetry.{table}") == 2
            assert len(await _chunks(conn, table)) == 2
    finally:
        await conn.close()


async def test_policies_are_reconciled_never_recreated(scratch_url: str) -> None:
    first = await _migrate(scratch_url)
    assert sorted((c.hypertable, c.action) for c in first.policies) == [
        ("position_attributes", "created"),
        ("positions", "created"),
    ]
    conn = await asyncpg.connect(scratch_url)
    try:
        jobs = await _jobs(conn)
        job_id = jobs[("positions", "policy_compression")]["job_id"]
        # An operator tunes the job by hand, and it has run once.
        await conn.execute("SELECT alter_job($1, schedule_interval => interval '1 hour')", job_id)
        await _run_by_scheduler(conn, job_id)
        runs = await _total_runs(conn, job_id)
        jobs = await _jobs(conn)

        for _restart in range(2):
            again = await _migrate(scratch_url)
            assert again.policies == []
            assert again.applied == []
            now = await _jobs(conn)
            assert {k: (r["job_id"], r["config"]) for k, r in now.items()} == {
                k: (r["job_id"], r["config"]) for k, r in jobs.items()
            }
            assert now[("positions", "policy_compression")]["schedule_interval"] == timedelta(
                hours=1
            )
            assert await _total_runs(conn, job_id) == runs  # its history is kept

        changed = await _migrate(scratch_url, timescale_compress_after="3 days")
        assert {(c.hypertable, c.action, c.job_id) for c in changed.policies} == {
            ("positions", "altered", job_id),
            (
                "position_attributes",
                "altered",
                jobs[("position_attributes", "policy_compression")]["job_id"],
            ),
        }
        after = (await _jobs(conn))[("positions", "policy_compression")]
        assert (after["job_id"], after["schedule_interval"]) == (job_id, timedelta(hours=1))
        assert '"compress_after": "3 days"' in after["config"]

        removed = await _migrate(scratch_url, timescale_compress_after="")
        assert {c.action for c in removed.policies} == {"removed"}
        assert await _jobs(conn) == {}
    finally:
        await conn.close()


async def test_a_hand_made_policy_is_reported_not_removed(scratch_url: str) -> None:
    await _migrate(scratch_url, timescale_compress_after="")
    conn = await asyncpg.connect(scratch_url)
    try:
        hand = await conn.fetchval(
            "SELECT add_compression_policy('telemetry.positions', interval '10 days')"
        )
        retention = await conn.fetchval(
            "SELECT add_retention_policy('telemetry.position_attributes', interval '1 year')"
        )
        report = await _migrate(scratch_url)  # defaults: compress after 7 days, no retention
        by_pair = {(c.hypertable, c.proc): c for c in report.policies}
        assert by_pair[("positions", "policy_compression")].action == "not_owned"
        assert by_pair[("positions", "policy_compression")].job_id == hand
        assert by_pair[("position_attributes", "policy_retention")].action == "not_owned"
        assert by_pair[("position_attributes", "policy_compression")].action == "created"
        jobs = await _jobs(conn)
        assert '"compress_after": "10 days"' in jobs[("positions", "policy_compression")]["config"]
        assert jobs[("position_attributes", "policy_retention")]["job_id"] == retention

        owned = await _migrate(scratch_url, timescale_own_policies=True)
        by_pair = {(c.hypertable, c.proc): c for c in owned.policies}
        assert by_pair[("positions", "policy_compression")].action == "altered"
        assert by_pair[("position_attributes", "policy_retention")].action == "removed"
        jobs = await _jobs(conn)
        assert jobs[("positions", "policy_compression")]["job_id"] == hand  # same job, altered
        assert '"compress_after": "7 days"' in jobs[("positions", "policy_compression")]["config"]
        assert ("position_attributes", "policy_retention") not in jobs
    finally:
        await conn.close()


async def test_invalid_interval_is_a_clear_error(scratch_url: str) -> None:
    from processor.storage.migrate import MigrationError

    with pytest.raises(MigrationError, match="PROCESSOR_TIMESCALE_RETENTION='two years'"):
        await _migrate(scratch_url, timescale_retention="two years")


async def test_job_metrics_follow_job_stats(scratch_url: str) -> None:
    await _migrate(scratch_url, timescale_retention="400 days")
    settings = load_settings(database_url=scratch_url)
    pool = await create_pool(settings, prepare_stage=False)
    try:
        async with pool.acquire() as conn:
            jobs = await _jobs(conn)
            for job in jobs.values():
                await _run_by_scheduler(conn, job["job_id"])
            metrics = Metrics()
            assert await sample_jobs_once(pool, metrics) == 4
            stats = {key: await _job_stat(conn, job["job_id"]) for key, job in jobs.items()}
        for (table, proc), job in jobs.items():
            labels = {"job_id": str(job["job_id"]), "proc": proc, "hypertable": table}
            value = metrics.registry.get_sample_value
            stat = stats[(table, proc)]
            assert stat is not None
            assert value("processor_timescaledb_job_last_run_ok", labels) == 1
            assert value("processor_timescaledb_job_runs", labels) == stat["total_runs"]
            assert value("processor_timescaledb_job_failures", labels) == stat["total_failures"]
            age = value("processor_timescaledb_job_last_success_age_seconds", labels)
            assert age is not None
            assert 0 <= age < 300
        # A job removed by the settings leaves no stale series behind.
        await _migrate(scratch_url, timescale_retention="")
        await asyncio.wait_for(sample_jobs_once(pool, metrics), 30)
        procs = {
            s.labels["proc"]
            for family in metrics.registry.collect()
            if family.name == "processor_timescaledb_job_runs"
            for s in family.samples
        }
        assert procs == {"policy_compression"}
    finally:
        await pool.close()

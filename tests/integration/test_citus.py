"""Citus mode on a real cluster (`TEST_CITUS_ADMIN_URL`, a coordinator with workers):
migrate distributes positions, the pipeline stores and counts exactly as on plain
PostgreSQL, Citus's error wrapping is seen through, and every query of the domain stage
and the tools runs there with the same results as on plain PostgreSQL.

Skipped, with the reason, where no such cluster answers (tests/citus_cluster.py).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from processor.core.position import Position
from processor.core.settings import Settings, load_settings
from processor.observability.metrics import Metrics
from processor.storage.engine import engine_of
from processor.storage.errors import ErrorClass, classify
from processor.storage.migrate import MigrationError, migrate
from processor.storage.pool import create_pool, install_codecs
from processor.storage.rows import COLUMNS, to_row
from processor.storage.writer import PositionWriter
from processor.tools.bench import cluster
from processor.tools.event_loader import load_event_rows, read_event_file
from processor.tools.status import _database_status
from tests import citus_cluster
from tests.conftest import ADMIN_URL, DIRECTUS_FIXTURE, _with_database
from tests.entries import BASE_MS
from tests.integration import test_order_independence as order
from tests.integration import test_pipeline as pipeline
from tests.integration.test_domain_cli import child_env

REASON = citus_cluster.unavailable()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(REASON is not None, reason=f"no Citus cluster: {REASON}"),
]
DISTRIBUTED = {"positions", "position_attributes"}
ROLE_SQL = Path(__file__).resolve().parents[2] / "deploy" / "sql" / "processor-role.sql"


@pytest.fixture(scope="session")
def citus_url() -> Iterator[str]:
    """A database of this run spread over the cluster, migrated, with the Directus tables."""
    with citus_cluster.citus_database_sync("processor_citus_test") as url:

        async def prepare() -> None:
            conn = await asyncpg.connect(url)
            try:
                await migrate(conn, load_settings(database_url=url))
                await conn.execute(DIRECTUS_FIXTURE.read_text())
            finally:
                await conn.close()

        asyncio.run(prepare())
        yield url


@pytest.fixture
async def citus_db(citus_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(citus_url)
    await conn.execute("TRUNCATE telemetry.positions")
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
def citus_settings(settings: Settings, citus_url: str) -> Settings:
    return settings.model_copy(update={"database_url": SecretStr(citus_url)})


# -- migrate ------------------------------------------------------------------------


async def test_migrate_distributes_positions_and_attributes_colocated(
    citus_db: asyncpg.Connection, citus_url: str
) -> None:
    modes = await citus_db.fetch("SELECT DISTINCT mode FROM telemetry.schema_migrations")
    assert [r["mode"] for r in modes] == ["citus"]
    assert await engine_of(citus_db) == "citus"
    rows = await citus_db.fetch(
        """SELECT p.logicalrelid::regclass::text AS t, p.colocationid,
                  column_to_column_name(p.logicalrelid, p.partkey) AS col,
                  (SELECT count(*) FROM pg_dist_shard s WHERE s.logicalrelid = p.logicalrelid)
                    AS shards
           FROM pg_dist_partition p"""
    )
    found = {r["t"]: r for r in rows}
    assert set(found) == {f"telemetry.{t}" for t in DISTRIBUTED}
    assert {r["col"] for r in rows} == {"device_id"}
    assert len({r["colocationid"] for r in rows}) == 1  # co-located
    assert {r["shards"] for r in rows} == {load_settings().citus_shard_count}
    # Everything else the processor owns is a local table on the coordinator.
    tables = await citus_db.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'telemetry' ORDER BY 1"
    )
    assert {r["tablename"] for r in tables} - DISTRIBUTED >= {
        "schema_migrations",
        "outbox",
        "domain_outputs",
        "domain_progress",
    }
    assert await citus_db.fetchval("SELECT to_regclass('telemetry.positions_ts_idx') IS NOT NULL")
    again = await migrate(citus_db, load_settings(database_url=citus_url))
    assert (again.mode, again.applied, again.skipped) == ("citus", [], [])


async def _cli(url: str, *args: str, mode: str = "auto") -> tuple[int, str]:
    settings = load_settings(
        database_url=url, database_mode=mode, log_format="json", log_level="ERROR"
    )
    env = child_env(settings, http_enabled="false")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "processor",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_create_database_refuses_on_a_citus_server_and_says_how() -> None:
    name = f"processor_citus_nodb_{uuid.uuid4().hex[:8]}"
    url = _with_database(citus_cluster.CITUS_ADMIN_URL, name)
    code, out = await _cli(url, "migrate", "--create-database")
    assert code == 1, out
    assert "cannot make a Citus database" in out
    assert "every worker" in out
    admin = await asyncpg.connect(citus_cluster.CITUS_ADMIN_URL)
    try:
        assert not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
    finally:
        await admin.close()


async def test_an_incomplete_cluster_is_refused_not_migrated_plain() -> None:
    """The extension on the coordinator only (no worker registered in this database)."""
    name = f"processor_citus_half_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(citus_cluster.CITUS_ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(citus_cluster.CITUS_ADMIN_URL, name)
    try:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("SET client_min_messages = warning")
            await conn.execute("CREATE EXTENSION citus")
            for mode in ("auto", "citus"):
                with pytest.raises(MigrationError, match="no active Citus worker"):
                    await migrate(conn, load_settings(database_url=url, database_mode=mode))
            assert not await conn.fetchval("SELECT to_regclass('telemetry.positions') IS NOT NULL")
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.mark.skipif(shutil.which("psql") is None, reason="psql (PostgreSQL client) not installed")
async def test_the_least_privilege_role_migrates_writes_and_reads_status() -> None:
    """deploy/sql/processor-role.sql on the coordinator; the role distributes its own
    tables, writes, and `processor status` reads every shard."""
    password = secrets.token_urlsafe(24)
    nodes = [cluster.coordinator_of(citus_cluster.CITUS_ADMIN_URL), *await citus_cluster.workers()]
    try:
        async with citus_cluster.citus_database("processor_citus_priv") as url:
            conn = await asyncpg.connect(url)
            try:
                await conn.execute(DIRECTUS_FIXTURE.read_text())
            finally:
                await conn.close()
            done = await asyncio.create_subprocess_exec(
                "psql", "-X", "-v", "ON_ERROR_STOP=1", "-v", f"processor_password={password}",
                "-d", url, "-f", str(ROLE_SQL),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            out, _ = await asyncio.wait_for(done.communicate(), 60)
            assert done.returncode == 0, out.decode()
            as_role = url.replace("postgres@", f"processor:{password}@", 1)
            conn = await asyncpg.connect(as_role)
            try:
                report = await migrate(conn, load_settings(database_url=as_role))
                assert report.mode == "citus"
                assert "0010_positions_distributed" in report.applied
            finally:
                await conn.close()
            pool = await create_pool(load_settings(database_url=as_role))
            try:
                batch = [_position("PRIV", BASE_MS + s * 1000) for s in range(50)]
                assert (await PositionWriter(pool, Metrics()).write(batch)).inserted == 50
            finally:
                await pool.close()
            status = await _database_status(load_settings(database_url=as_role))
            assert status.errors == []
            assert status.freshness is not None
            assert status.freshness.devices == 1
    finally:
        for node in nodes:  # a role is per server; Citus created it on every node
            admin = await asyncpg.connect(cluster.on_node(citus_cluster.CITUS_ADMIN_URL, node))
            try:
                await admin.execute("DROP ROLE IF EXISTS processor")
            finally:
                await admin.close()


# -- the pipeline: stored and counted exactly -------------------------------------------

PipelineTest = Callable[[Settings, aioredis.Redis, asyncpg.Connection], Awaitable[None]]


@pytest.mark.parametrize(
    "plain_test",
    [
        pipeline.test_every_entry_ends_as_row_duplicate_or_dead_letter,
        pipeline.test_restart_replays_are_counted_as_database_duplicates,
        pipeline.test_out_of_order_and_resent_records_first_wins,
        pipeline.test_row_level_database_error_dead_letters_only_that_entry,
    ],
    ids=lambda f: f.__name__.removeprefix("test_"),
)
async def test_pipeline_as_on_plain_postgresql(
    plain_test: PipelineTest,
    citus_settings: Settings,
    redis_client: aioredis.Redis,
    citus_db: asyncpg.Connection,
) -> None:
    """The plain pipeline tests, unchanged, against the distributed table."""
    await plain_test(citus_settings, redis_client, citus_db)


def _position(device: str, ts_ms: int) -> Position:
    return Position(
        device_id=device,
        ts_ms=ts_ms,
        received_at_ms=ts_ms + 400,
        latitude=54.6,
        longitude=25.2,
        fix_valid=True,
        stream_id=f"{ts_ms}-0",
    )


@pytest.mark.parametrize("method", ["copy", "unnest"])
async def test_writer_counts_inserted_rows_not_rows_sent(
    method: str, citus_settings: Settings, citus_db: asyncpg.Connection
) -> None:
    batch = [_position(f"W{d}", BASE_MS + s * 1000) for d in range(40) for s in range(25)]
    pool = await create_pool(citus_settings)
    try:
        writer = PositionWriter(pool, Metrics(), method=method)  # type: ignore[arg-type]
        assert (await writer.write(batch)).inserted == 1000
        assert (await writer.write(batch)).inserted == 0  # every row a duplicate
        half_new = batch[:500] + [_position("NEW", BASE_MS + s * 1000) for s in range(500)]
        assert (await writer.write(half_new)).inserted == 500
        # The session caches its connections to the workers (storage/citus.py).
        async with pool.acquire() as conn:
            cached = await conn.fetchval("SHOW citus.max_cached_conns_per_worker")
        assert cached == str(citus_settings.citus_cached_connections)
    finally:
        await pool.close()
    assert await citus_db.fetchval("SELECT count(*) FROM telemetry.positions") == 1500


async def test_an_oversized_key_is_isolated_to_its_row(
    citus_settings: Settings, citus_db: asyncpg.Connection
) -> None:
    """54000 from a worker (index row too large) comes back as itself: one row refused."""
    batch = [_position(f"K{i}", BASE_MS + i) for i in range(99)]
    batch.insert(37, _position(secrets.token_hex(6000), BASE_MS))
    pool = await create_pool(citus_settings)
    try:
        result = await PositionWriter(pool, Metrics()).write(batch)
    finally:
        await pool.close()
    assert result.inserted == 99
    assert [p.stream_id for p, _ in result.failed] == [batch[37].stream_id]
    assert "54000" in result.failed[0][1]


async def test_copy_errors_wrapped_by_citus_are_classified_as_the_row_s(
    citus_db: asyncpg.Connection,
) -> None:
    """A COPY straight into the distributed table gets a worker's error back as XX000."""
    await install_codecs(citus_db)  # times as epoch ms, as the writer sends them
    row = to_row(_position("DUP", BASE_MS))
    await citus_db.copy_records_to_table(
        "positions", schema_name="telemetry", records=[row], columns=COLUMNS
    )
    seen = []
    for records in ([row], [(secrets.token_hex(6000), *row[1:])]):
        with pytest.raises(asyncpg.PostgresError) as caught:
            await citus_db.copy_records_to_table(
                "positions", schema_name="telemetry", records=records, columns=COLUMNS
            )
        seen.append(caught.value.sqlstate)
        assert classify(caught.value) is ErrorClass.ROW
    assert "XX000" in seen  # what makes the classification's unwrapping necessary


# -- every query the domain stage and the tools run -----------------------------------


@pytest.fixture
async def race_databases() -> AsyncIterator[tuple[str, str]]:
    """A plain database and a Citus one, each with the Directus tables and the sample
    event, dropped afterwards."""
    plain_name = f"processor_citus_ref_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{plain_name}"')
    plain_url = _with_database(ADMIN_URL, plain_name)
    try:
        async with citus_cluster.citus_database("processor_citus_race") as citus_url:
            for url, mode in ((plain_url, "plain"), (citus_url, "citus")):
                conn = await asyncpg.connect(url)
                try:
                    report = await migrate(
                        conn, load_settings(database_url=url, database_mode=mode)
                    )
                    assert report.mode == mode
                    await conn.execute(DIRECTUS_FIXTURE.read_text())
                    await load_event_rows(conn, read_event_file())
                finally:
                    await conn.close()
            yield plain_url, citus_url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{plain_name}" WITH (FORCE)')
        await admin.close()


def _json_doc(text: str) -> Any:
    """The JSON document a command printed (its logs are errors only: none expected)."""
    return json.loads(text)


@pytest.mark.slow
@pytest.mark.timeout(1800)
async def test_domain_outputs_and_tools_equal_a_plain_run(
    race_databases: tuple[str, str], stream_prefix: str
) -> None:
    """The simulated race (a stop, a buffered upload, speeding, a tie) through `processor
    run` and two `processor domain` instances on each engine: every output identical;
    then recompute, replay, the leaderboard and status give the same on both."""
    plain_url, citus_url = race_databases
    entries = order.race_entries()
    plain = await order.run_race(plain_url, entries, "plain")
    citus = await order.run_race(citus_url, entries, "citus")
    assert plain["positions"][0] > 0
    assert len(plain["timing_records"]) > 0
    # The clock's signal-lost read and the fast path's later-arrival read both ran.
    kinds = {json.loads(a)["kind"] for a in plain["alerts"]}
    assert kinds >= {"stopped", "signal_lost"}, kinds
    assert citus == plain

    answers: dict[str, dict[str, Any]] = {}
    for name, url in (("plain", plain_url), ("citus", citus_url)):
        got: dict[str, Any] = {}
        code, out = await _cli(url, "recompute", "--stage", "1", "--dry-run")
        assert code == 0, out
        got["recompute"] = [ln for ln in out.splitlines() if not ln.startswith("{")]
        device = order.race_entries()[0].device_id
        code, out = await _cli(
            url,
            "replay",
            "--device",
            device,
            "--since",
            "2026-05-01T00:00:00Z",
            "--until",
            "2026-05-02T00:00:00Z",
            "--dry-run",
        )
        assert code == 0, out
        got["replay"] = [ln for ln in out.splitlines() if not ln.startswith("{")]
        for stage in (1, 2):
            code, out = await _cli(url, "leaderboard", "--stage", str(stage), "--json")
            assert code == 0, out
            got[f"leaderboard_{stage}"] = _json_doc(out)
        code, out = await _cli(url, "recompute", "--stage", "1")
        assert code == 0, out
        got["outputs_after_recompute"] = await order.outputs(url)
        code, out = await _cli(url, "status", "--json")
        status = _json_doc(out)
        assert status["database"]["errors"] == [], status
        got["freshness_devices"] = status["database"]["freshness"]["devices"]
        answers[name] = got
    assert answers["citus"] == answers["plain"]
    assert answers["citus"]["freshness_devices"] == len({e.device_id for e in entries})
    assert answers["citus"]["outputs_after_recompute"] == plain  # nothing to re-time

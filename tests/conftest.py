"""Shared fixtures: a database of its own per test run, stream keys of their own per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis.asyncio as aioredis

from processor.core.settings import Settings, load_settings
from processor.storage import timescale
from processor.storage.migrate import migrate
from processor.storage.timescale import Extension
from tests import citus_cluster

ADMIN_URL = os.environ.get(
    "TEST_DATABASE_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# Where the server under test listens: fault tests put their TCP proxies in front of it.
ADMIN_HOST = urlsplit(ADMIN_URL).hostname or "127.0.0.1"
ADMIN_PORT = urlsplit(ADMIN_URL).port or 5432
DIRECTUS_FIXTURE = (
    Path(__file__).resolve().parents[1] / "src" / "processor" / "storage" / "directus_fixture.sql"
)


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


# Whether the server under test is a Citus coordinator with workers: then every database
# a fixture makes is spread over the cluster (tests/citus_cluster.py), so the suite runs
# in Citus mode as it runs in TimescaleDB mode on a TimescaleDB server.
def server_is_citus() -> bool:
    return citus_cluster.unavailable(ADMIN_URL) is None


async def _create_database(name: str) -> str:
    if await citus_cluster.why_unavailable(ADMIN_URL) is None:
        return await citus_cluster.create_database(name, ADMIN_URL)
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return _with_database(ADMIN_URL, name)


async def _drop_database(name: str) -> None:
    if await citus_cluster.why_unavailable(ADMIN_URL) is None:
        await citus_cluster.drop_database(name, ADMIN_URL)
        return
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh database for this test run, migrated, dropped at the end."""
    import asyncio

    name = f"processor_test_{uuid.uuid4().hex[:10]}"
    url = _with_database(ADMIN_URL, name)

    async def create() -> None:
        await _create_database(name)
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn, load_settings(database_url=url))
            # The Directus collections, as Directus would create them (test tooling only).
            await conn.execute(DIRECTUS_FIXTURE.read_text())
        finally:
            await conn.close()

    async def drop() -> None:
        await _drop_database(name)

    try:  # a fixture that fails half-way still removes what it made
        asyncio.run(create())
        yield url
    finally:
        asyncio.run(drop())


def _server_extension() -> Extension:
    import asyncio

    async def read() -> Extension:
        conn = await asyncpg.connect(ADMIN_URL)
        try:
            return await timescale.inspect(conn)
        finally:
            await conn.close()

    return asyncio.run(read())


@pytest.fixture(scope="session")
def server_extension() -> Extension:
    """What the server under test says about TimescaleDB."""
    return _server_extension()


@pytest.fixture(scope="session")
def server_mode(server_extension: Extension) -> str:
    """The mode a fresh database gets on the server under test with the default settings."""
    if server_is_citus():
        return "citus"
    return "timescale" if server_extension.usable else "plain"


@pytest.fixture
def needs_timescale(server_extension: Extension) -> None:
    """Skip (with the reason) unless the server under test has a usable TimescaleDB."""
    if not server_extension.available:
        pytest.skip(f"no timescaledb extension on the server under test ({ADMIN_URL})")
    if not server_extension.preloaded:
        pytest.skip("timescaledb is available on the server under test but not preloaded")


@pytest.fixture
async def scratch_url() -> AsyncIterator[str]:
    """An empty database of its own for one test (not migrated), dropped afterwards."""
    name = f"processor_scratch_{uuid.uuid4().hex[:10]}"
    url = await _create_database(name)
    try:
        yield url
    finally:
        await _drop_database(name)


@pytest.fixture
def stream_prefix() -> str:
    return f"test:{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def redis_client(stream_prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        keys = [k async for k in client.scan_iter(match=f"{stream_prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the run's database; positions emptied before each test."""
    conn = await asyncpg.connect(database_url)
    await conn.execute("TRUNCATE telemetry.positions")
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
def settings(database_url: str, stream_prefix: str) -> Settings:
    return load_settings(
        database_url=database_url,
        redis_url=REDIS_URL,
        stream=f"{stream_prefix}:positions",
        group="processor",
        consumer="test-consumer",
        http_enabled=False,
        batch_max_age_ms=20,
        block_ms=200,
        claim_interval_ms=200,
        claim_idle_ms=2000,
        retry_initial_ms=20,
        retry_max_ms=500,
        log_format="json",
    )

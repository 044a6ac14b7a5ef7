"""Fault tests use synchronous clients: the processes under test are separate."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
import redis

from tests.conftest import REDIS_URL


@pytest.fixture
def sync_redis(stream_prefix: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        keys = list(client.scan_iter(match=f"{stream_prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def sync_db(database_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE telemetry.positions")
        yield conn

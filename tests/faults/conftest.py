"""Fault tests use synchronous clients: the processes under test are separate.

Every process, proxy, Redis server, lock and temp dir a test makes comes from a fixture
here and is cleaned up by it; when the test fails, the logs of its processors are printed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

import psycopg
import pytest
import redis

from processor.core.settings import Settings
from tests.conftest import REDIS_URL
from tests.faults.harness import RedisServer, Spawner, TableLock, TcpProxy


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, Any]:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    return any(
        getattr(getattr(request.node, f"report_{when}", None), "failed", False)
        for when in ("setup", "call")
    )


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


@pytest.fixture
def fast(settings: Settings) -> Settings:
    """Small timeouts so every fault plays out in seconds."""
    return settings.model_copy(
        update={
            "claim_idle_ms": 1500,
            "claim_interval_ms": 200,
            "block_ms": 200,
            "batch_max_age_ms": 20,
            "batch_max_rows": 500,
            "read_count": 500,
            "batches_in_flight": 2,
            "retry_initial_ms": 20,
            "retry_max_ms": 500,
            "shutdown_timeout_s": 10,
        }
    )


@pytest.fixture
def spawn(request: pytest.FixtureRequest) -> Iterator[Spawner]:
    spawner = Spawner()
    try:
        yield spawner
    finally:
        spawner.close(dump=_failed(request))


@pytest.fixture
def make_proxy() -> Iterator[Callable[..., TcpProxy]]:
    """A proxy in front of host:port; `make_proxy(ADMIN_PORT, ADMIN_HOST)` for the database
    server under test (whichever server TEST_DATABASE_ADMIN_URL names)."""
    proxies: list[TcpProxy] = []

    def make(port: int, host: str = "127.0.0.1") -> TcpProxy:
        proxy = TcpProxy(port, host, name=f"proxy-{port}").start()
        proxies.append(proxy)
        return proxy

    try:
        yield make
    finally:
        for proxy in proxies:
            proxy.close()


@pytest.fixture
def make_redis() -> Iterator[Callable[..., RedisServer]]:
    servers: list[RedisServer] = []

    def make(*, appendonly: bool) -> RedisServer:
        server = RedisServer(appendonly=appendonly).start()
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.close()


@pytest.fixture
def table_lock(database_url: str) -> Iterator[TableLock]:
    lock = TableLock(database_url)
    try:
        yield lock
    finally:
        lock.close()


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Iterator[Callable[..., None]]:
    """`record(key=value, …)`: results for docs/reliability.md, appended as one JSON line
    to $FAULT_REPORT (if set) when the test passes."""
    data: dict[str, Any] = {}
    started = time.monotonic()

    def add(**values: Any) -> None:
        data.update(values)

    yield add
    path = os.environ.get("FAULT_REPORT")
    if path and not _failed(request):
        data = {
            "test": request.node.nodeid,
            "seconds": round(time.monotonic() - started, 1),
            **data,
        }
        with open(path, "a") as out:
            out.write(json.dumps(data, default=str) + "\n")

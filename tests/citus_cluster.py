"""A Citus database of its own for a test run, on the cluster `TEST_CITUS_ADMIN_URL` names.

The processor never creates a Citus database (`migrate --create-database` refuses on a
Citus server): a distributed database is the same database, with the citus extension, on
every node, and the workers registered on the coordinator — an operator's job
(docs/scaling.md). The benchmark's scratch helper (`processor.tools.bench.cluster`) does
that job for each test database here, and drops it on every node afterwards.

`TEST_CITUS_ADMIN_URL` defaults to the coordinator `../shared/tools/citus-dev.sh` starts
(127.0.0.1:5440, database postgres). Where nothing answers there, or what answers is not
a Citus coordinator with active workers, `unavailable()` says why and the tests skip.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

import asyncpg

from processor.tools.bench import cluster

CITUS_ADMIN_URL = os.environ.get(
    "TEST_CITUS_ADMIN_URL", "postgresql://postgres@127.0.0.1:5440/postgres"
)


async def _unavailable(admin_url: str) -> str | None:
    try:
        conn = await asyncpg.connect(admin_url, timeout=5)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        return f"no Citus coordinator answers at {admin_url} ({type(exc).__name__})"
    try:
        installed = await conn.fetchval("SELECT 1 FROM pg_extension WHERE extname = 'citus'")
        if not installed:
            return f"{admin_url} has no citus extension in its admin database"
        active = await conn.fetchval("SELECT count(*) FROM citus_get_active_worker_nodes()")
    finally:
        await conn.close()
    if not active:
        return f"the Citus coordinator at {admin_url} has no active worker"
    return None


_reasons: dict[str, str | None] = {}


async def why_unavailable(admin_url: str = CITUS_ADMIN_URL) -> str | None:
    """Why no Citus test can run on `admin_url` (None: they can). Asked once per process."""
    if admin_url not in _reasons:
        _reasons[admin_url] = await _unavailable(admin_url)
    return _reasons[admin_url]


def unavailable(admin_url: str = CITUS_ADMIN_URL) -> str | None:
    """`why_unavailable` outside an event loop (skip conditions, session fixtures)."""
    if admin_url not in _reasons:
        _reasons[admin_url] = asyncio.run(_unavailable(admin_url))
    return _reasons[admin_url]


async def create_database(
    name: str,
    admin_url: str = CITUS_ADMIN_URL,
    register_as: Callable[[cluster.Node], cluster.Node] | None = None,
) -> str:
    """A new database `name` spread over the cluster: its URL on the coordinator."""
    return await cluster.create_database(name, admin_url, register_as=register_as)


async def drop_database(name: str, admin_url: str = CITUS_ADMIN_URL) -> None:
    """Drop `name` on every node."""
    await cluster.drop_database(name, admin_url)


async def workers(admin_url: str = CITUS_ADMIN_URL) -> list[cluster.Node]:
    return await cluster.workers(admin_url)


@asynccontextmanager
async def citus_database(prefix: str = "processor_citus") -> AsyncIterator[str]:
    """A database of its own on the cluster for the `async with` block."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        yield await create_database(name)
    finally:
        await drop_database(name)


@contextmanager
def citus_database_sync(
    prefix: str = "processor_citus",
    register_as: Callable[[cluster.Node], cluster.Node] | None = None,
) -> Iterator[str]:
    """`citus_database` outside an event loop (session fixtures, fault tests)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        yield asyncio.run(create_database(name, register_as=register_as))
    finally:
        asyncio.run(drop_database(name))

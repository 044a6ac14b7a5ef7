"""A scratch database spread over a Citus cluster, for the benchmark (and the tests).

Development tooling, never the processor's runtime: a distributed database is the same
database, with the citus extension, on every node, and the workers registered on the
coordinator (`migrate --create-database` refuses to attempt it). Given the coordinator's
admin URL, the workers are read from its admin database's `pg_dist_node` (where
`citus-dev.sh` and `citus_add_node` put them); each node is reached with the admin URL's
user and password at the host and port Citus has for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import asyncpg


@dataclass(frozen=True)
class Node:
    host: str
    port: int


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def on_node(url: str, node: Node) -> str:
    """The same URL (user, password, database) pointed at another node."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{node.host}:{node.port}" if userinfo else f"{node.host}:{node.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def coordinator_of(url: str) -> Node:
    parts = urlsplit(url)
    return Node(parts.hostname or "127.0.0.1", parts.port or 5432)


async def workers(admin_url: str) -> list[Node]:
    """The active primary workers registered in the admin database."""
    conn = await asyncpg.connect(admin_url, timeout=5)
    try:
        rows = await conn.fetch(
            "SELECT nodename, nodeport FROM pg_dist_node"
            " WHERE groupid > 0 AND noderole = 'primary' AND isactive ORDER BY nodeid"
        )
    finally:
        await conn.close()
    return [Node(r["nodename"], r["nodeport"]) for r in rows]


async def create_database(
    name: str, admin_url: str, *, register_as: Callable[[Node], Node] | None = None
) -> str:
    """A new database `name` on every node, with the extension, the workers registered:
    its URL on the coordinator. `register_as`: the address the coordinator is to reach a
    worker at (a fault test's proxy in front of it), the worker's own by default."""
    coordinator = coordinator_of(admin_url)
    nodes = await workers(admin_url)
    if not nodes:
        raise RuntimeError(f"no active Citus worker is registered at {coordinator}")
    quoted = '"' + name.replace('"', '""') + '"'
    for node in [coordinator, *nodes]:
        conn = await asyncpg.connect(on_node(admin_url, node), timeout=10)
        try:
            await conn.execute(f"CREATE DATABASE {quoted}")
        finally:
            await conn.close()
        conn = await asyncpg.connect(with_database(on_node(admin_url, node), name), timeout=10)
        try:
            await conn.execute("SET client_min_messages = warning")
            await conn.execute("CREATE EXTENSION citus")
        finally:
            await conn.close()
    url = with_database(admin_url, name)
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(
            "SELECT citus_set_coordinator_host($1, $2)", coordinator.host, coordinator.port
        )
        for node in nodes:
            reach = register_as(node) if register_as is not None else node
            await conn.execute("SELECT citus_add_node($1, $2)", reach.host, reach.port)
    finally:
        await conn.close()
    return url


async def drop_database(name: str, admin_url: str) -> None:
    """Drop `name` on every node (the coordinator first: its connections to the workers
    go with it)."""
    quoted = '"' + name.replace('"', '""') + '"'
    for node in [coordinator_of(admin_url), *await workers(admin_url)]:
        conn = await asyncpg.connect(on_node(admin_url, node), timeout=10)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
        finally:
            await conn.close()

"""End to end with a real Directus 10.13: a simulated race → `processor run --with-domain`
(a child process, dispatching) → Directus → a WebSocket subscriber and the Flows.

What is checked, as race control would see it:
- every change delivered: the subscriber ends with exactly the `processor_events` items
  Directus holds, no row version twice, and every row's last event equals the row;
- Directus stopped mid-race and started again: nothing lost (the outbox waits);
- the example Flow notifies race control of a critical alert;
- race control waives a penalty in Directus (the officials'-intent Flow makes the row
  manual), the result is recomputed, the change reaches the subscriber, and the cache
  (CACHE_AUTO_PURGE) does not serve the old total;
- race control cannot delete a stage; the public role reads a public event's results
  without a token.
Commit → subscriber latency is printed (p50/p99), measured, not asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from processor.core.settings import Settings
from processor.directus.access import ROLES_BY_KEY
from processor.storage.migrate import migrate
from processor.tools.event_loader import load_event_rows, read_event_file
from processor.tools.simulator.event import load_event
from processor.tools.simulator.generator import GeneratorConfig, Simulation
from processor.tools.simulator.scenarios import parse
from tests.faults.harness import ProcessorProcess
from tests.integration.directus_server import (
    DIRECTUS_TIMEOUT_S,
    DirectusServer,
    running_directus,
)
from tests.integration.directus_subscriber import Subscriber
from tests.integration.test_dispatch import assert_directus_matches_rows
from tests.integration.test_pipeline import add_all

pytestmark = [pytest.mark.integration, pytest.mark.timeout(DIRECTUS_TIMEOUT_S)]

DISPATCHER_TOKEN = "dispatcher-" + os.urandom(12).hex()
RACE_CONTROL = ("race.control@example.com", "rc-" + os.urandom(8).hex())
# A car stopped on SS1 for four minutes: the stopped alert escalates to critical (180 s).
STOP = "stop:entry=2,stage=1,fraction=0.5,duration=240"


@pytest.fixture(scope="module")
def directus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DirectusServer]:
    env = {
        "WEBSOCKETS_ENABLED": "true",
        "CACHE_ENABLED": "true",
        "CACHE_STORE": "memory",
        "CACHE_AUTO_PURGE": "true",
        "CACHE_TTL": "10m",
        # Kept across the restart, as in production: sessions and tokens stay valid.
        "DIRECTUS_KEY": os.urandom(16).hex(),
        "DIRECTUS_SECRET": os.urandom(32).hex(),
    }
    with running_directus(tmp_path_factory.mktemp("directus-live"), env=env) as server:
        yield server


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def stable(read: Callable[[], Awaitable[object]], for_s: float, timeout_s: float) -> None:
    """Until `read()` returns the same value for `for_s` seconds."""
    deadline = time.monotonic() + timeout_s
    value, since = await read(), time.monotonic()
    while time.monotonic() - since < for_s:
        if time.monotonic() > deadline:
            raise AssertionError(f"never stable: {value}")
        await asyncio.sleep(0.5)
        now = await read()
        if now != value:
            value, since = now, time.monotonic()


def apply_access(server: DirectusServer) -> None:
    """`processor directus apply`, run as an operator would."""
    env = {
        **os.environ,
        "PROCESSOR_DIRECTUS_ADMIN_TOKEN": server.admin_token,
        "PROCESSOR_DIRECTUS_TOKEN": DISPATCHER_TOKEN,
    }
    done = subprocess.run(
        [sys.executable, "-m", "processor", "directus", "apply", "--url", server.base_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
async def race_conn(
    directus: DirectusServer, settings: Settings
) -> AsyncIterator[asyncpg.Connection]:
    """The Directus database, migrated by the processor, with the sample event loaded."""
    conn = await asyncpg.connect(directus.database_url)
    try:
        await migrate(
            conn, settings.model_copy(update={"database_url": SecretStr(directus.database_url)})
        )
        await load_event_rows(conn, read_event_file())
        yield conn
    finally:
        await conn.close()


async def undelivered(conn: asyncpg.Connection) -> int:
    n: int = await conn.fetchval("SELECT count(*) FROM telemetry.outbox WHERE delivered_at IS NULL")
    return n


async def test_a_race_reaches_race_control_through_directus(
    directus: DirectusServer,
    settings: Settings,
    redis_client: aioredis.Redis,
    race_conn: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    apply_access(directus)
    rc_role = ROLES_BY_KEY["race_control"].id
    directus.create_user(rc_role, email=RACE_CONTROL[0], password=RACE_CONTROL[1])
    rc_token = directus.login(*RACE_CONTROL)
    directus.admin("PATCH", "/items/events/1", {"public": True})

    subscriber = Subscriber(directus.base_url, rc_token)
    listening = asyncio.create_task(subscriber.run())
    s = settings.model_copy(update={"database_url": SecretStr(directus.database_url)})
    proc = ProcessorProcess(
        s,
        "--with-domain",
        consumer="e2e",
        directus_url=directus.base_url,
        directus_token=DISPATCHER_TOKEN,
        dispatch_poll_s="0.5",
        domain_tick_s="3",  # officials' edits are taken on the next tick
        http_enabled="true",
        http_port="0",
    ).start()
    try:
        sim = Simulation(load_event(), GeneratorConfig(seed=7, scenarios=(parse(STOP),)))
        entries = [e.fields() for e in sim.entries()]
        half = len(entries) // 2

        # -- the first half live: every change reaches the subscriber ----------------
        await add_all(redis_client, s.stream, entries[:half])

        async def first_half_delivered() -> bool:
            return len(subscriber.items) > 0 and await undelivered(race_conn) == 0

        await until(first_half_delivered, 240, "the first half's events")
        await stable(lambda: _count(race_conn), 4, 120)
        live = dict(subscriber.received_at)
        latencies = sorted(
            subscriber.received_at[i] - _ts(subscriber.items[i]["created_at"]) for i in live
        )

        # -- Directus stopped mid-race: the outbox waits, nothing is lost --------------
        directus.stop()
        await add_all(redis_client, s.stream, entries[half:])

        async def backlog() -> bool:
            return await undelivered(race_conn) > 0

        await until(backlog, 240, "changes made while Directus is down")
        ready = _readyz(proc)
        assert ready["checks"]["dispatch"].startswith("failing for"), ready
        assert ready["ready"] is True  # storage does not depend on Directus
        directus.start()

        async def drained() -> bool:
            return await undelivered(race_conn) == 0

        await until(drained, 240, "the backlog delivered")
        await stable(lambda: _count(race_conn), 5, 240)

        async def caught_up() -> bool:
            n = await race_conn.fetchval("SELECT count(*) FROM telemetry.outbox")
            return bool(n) and len(subscriber.items) >= len(await _directus_items(directus))

        await until(caught_up, 60, "the subscriber caught up")

        # -- every change delivered, once, and the last of each row is its state ------
        held = await _directus_items(directus)
        assert sorted(subscriber.items) == sorted(i["id"] for i in held)
        versions = [(p["collection"], p["key"], p["version"]) for p in subscriber.payloads()]
        assert len(versions) == len(set(versions)), "a row version delivered twice"
        rows = await assert_directus_matches_rows(
            race_conn, [subscriber.items[i] for i in sorted(subscriber.items)]
        )
        assert rows > 0
        assert subscriber.connections >= 2  # it reconnected after the restart
        assert not subscriber.errors

        # -- the example Flow: a critical alert notifies race control -----------------
        critical = await race_conn.fetchval(
            "SELECT count(*) FROM public.alerts WHERE severity = 'critical'"
        )
        assert critical >= 1

        async def notified() -> bool:
            status, body = directus.request("GET", "/notifications", token=rc_token)
            return status == 200 and len(body["data"]) >= 1

        await until(notified, 60, "the critical-alert notification")

        # -- race control waives a penalty; the result follows, live and uncached -----
        penalty = await race_conn.fetchrow(
            "SELECT id, stage, entry, amount_ms FROM public.penalties"
            " WHERE source = 'auto' AND status = 'valid' ORDER BY id LIMIT 1"
        )
        assert penalty is not None, "the race has no automatic penalty to waive"
        result_path = (
            f"/items/stage_results?filter[stage][_eq]={penalty['stage']}"
            f"&filter[entry][_eq]={penalty['entry']}&fields=id,penalty_ms,total_ms"
        )
        status, before = directus.request("GET", result_path, token=rc_token)
        assert status == 200
        (old,) = before["data"]
        seen = max(subscriber.items)
        status, answer = directus.request(
            "PATCH", f"/items/penalties/{penalty['id']}", {"status": "cancelled"}, rc_token
        )
        assert status == 200, answer
        # Read at once, before the next tick recomputes the result: Directus caches this
        # answer (the old total); only the delivery of the result's change can purge it.
        status, cached = directus.request("GET", result_path, token=rc_token)
        assert status == 200
        assert cached["data"] == before["data"]
        row = await race_conn.fetchrow(
            "SELECT source, status FROM public.penalties WHERE id = $1", penalty["id"]
        )
        assert row is not None
        assert (row["source"], row["status"]) == ("manual", "cancelled")  # officials' intent

        async def result_event() -> bool:
            return any(
                i > seen
                and subscriber.items[i]["payload"]["collection"] == "stage_results"
                and subscriber.items[i]["payload"]["id"] == old["id"]
                for i in subscriber.items
            )

        await until(result_event, 60, "the waived result's event")
        status, after = directus.request("GET", result_path, token=rc_token)
        (new,) = after["data"]
        assert int(new["penalty_ms"]) == int(old["penalty_ms"]) - penalty["amount_ms"]

        # -- what race control and the public may do --------------------------------
        status, _ = directus.request("DELETE", "/items/stages/1", token=rc_token)
        assert status == 403
        status, public = directus.request("GET", "/items/stage_results?limit=5")
        assert status == 200
        assert public["data"], "the public role reads a public event's results"

        p50 = statistics.median(latencies)
        p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
        print(
            f"\n{len(held)} events delivered ({subscriber.by_websocket} by WebSocket),"
            f" {rows} rows; commit → subscriber over {len(latencies)} live events:"
            f" p50 {p50:.3f} s, p99 {p99:.3f} s, max {latencies[-1]:.3f} s"
        )
    finally:
        try:
            if proc.terminate() != 0:
                print(proc.tail(200))
        finally:
            proc.close()
            listening.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listening


async def _count(conn: asyncpg.Connection) -> tuple[int, int]:
    row = await conn.fetchrow(
        "SELECT count(*) AS n, count(*) FILTER (WHERE delivered_at IS NULL) AS open"
        " FROM telemetry.outbox"
    )
    assert row is not None
    return row["n"], row["open"]


async def _directus_items(server: DirectusServer) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = server.admin("GET", "/items/processor_events?limit=-1&fields=id")
    return data


def _readyz(proc: ProcessorProcess) -> dict[str, Any]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{proc.http_port}/readyz", timeout=10) as r:
            doc: dict[str, Any] = json.loads(r.read())
    except urllib.error.HTTPError as exc:
        doc = json.loads(exc.read())
    return doc


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()

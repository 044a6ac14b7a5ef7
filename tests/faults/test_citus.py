"""Faults on a Citus cluster (`TEST_CITUS_ADMIN_URL`): a `processor run` killed -9
mid-stream and restarted, and a worker cut off for 20 s under load. Nothing lost, nothing
stored twice, every entry accounted for, and the recovery needs no one.

The worker is cut off the way a stopped server looks to the coordinator: the coordinator
reaches it through a TCP proxy (registered in this test's database as the worker's
address), which resets every open connection and refuses new ones for the outage.
Skipped, with the reason, where no Citus cluster answers (tests/citus_cluster.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import asyncpg
import psycopg
import pytest
import redis
from pydantic import SecretStr

from processor.core.settings import Settings, load_settings
from processor.storage.migrate import migrate
from processor.tools.bench.cluster import Node
from tests import citus_cluster
from tests.conftest import REDIS_URL
from tests.faults import test_crash as crash
from tests.faults.harness import (
    Db,
    Item,
    Ledger,
    ProcessorProcess,
    Spawner,
    SteadyProducer,
    TcpProxy,
    assert_invariant,
    group_state,
    row_count,
    valid_items,
    wait_for,
    with_resends,
)

REASON = citus_cluster.unavailable()
pytestmark = [
    pytest.mark.faults,
    pytest.mark.skipif(REASON is not None, reason=f"no Citus cluster: {REASON}"),
]
OUTAGE_S = 20.0
RATE = 400  # entries per second from the producer


def _migrated(url: str) -> str:
    async def go() -> None:
        conn = await asyncpg.connect(url)
        try:
            report = await migrate(conn, load_settings(database_url=url))
            assert report.mode == "citus"
        finally:
            await conn.close()

    asyncio.run(go())
    return url


@pytest.fixture
def citus_url() -> Iterator[str]:
    with citus_cluster.citus_database_sync("processor_citus_fault") as url:
        yield _migrated(url)


@pytest.fixture
def citus_db(citus_url: str) -> Iterator[Db]:
    with psycopg.connect(citus_url, autocommit=True) as conn:
        yield conn


def test_kill_9_mid_stream_then_restart_stores_everything_once(
    settings: Settings, citus_url: str, sync_redis: redis.Redis, citus_db: Db
) -> None:
    fast = settings.model_copy(
        update={
            "database_url": SecretStr(citus_url),
            "claim_idle_ms": 1500,
            "batch_max_rows": 500,
        }
    )
    expected = crash.prefill(sync_redis, fast, seed=18)
    first = ProcessorProcess(fast, consumer="worker-1").start()
    try:
        assert wait_for(lambda: crash.rows(citus_db) > 3000, 60), first.output()
        first.kill9()
        assert crash.rows(citus_db) < expected, "killed too late to test anything"
        assert sync_redis.xpending(fast.stream, fast.group)["pending"] > 0
    finally:
        first.close()
    second = ProcessorProcess(fast, "--until-idle", consumer="worker-2").start()
    try:
        assert second.wait(180) == 0, second.output()
    finally:
        second.close()
    crash.assert_exactly_once(citus_db, sync_redis, fast, expected)


def _load(seconds: float, seed: int) -> Iterator[Item]:
    """Distinct positions of 40 devices (on every shard), 3 % of them re-sent."""
    yield from with_resends(valid_items(40, int(seconds * RATE / 40) + 1), 0.03, seed)


@pytest.mark.timeout(360)
def test_a_worker_cut_off_for_20_s_under_load_loses_nothing_and_recovers(
    fast: Settings,
    sync_redis: redis.Redis,
    spawn: Spawner,
    make_proxy: Callable[..., TcpProxy],
    record: Callable[..., None],
) -> None:
    workers = asyncio.run(citus_cluster.workers())
    proxies = {node: make_proxy(node.port, node.host) for node in workers}
    victim = proxies[workers[-1]]

    def through_proxy(node: Node) -> Node:
        return Node("127.0.0.1", proxies[node].port)

    with citus_cluster.citus_database_sync("processor_citus_cut", register_as=through_proxy) as url:
        here = fast.model_copy(update={"database_url": SecretStr(_migrated(url))})
        with psycopg.connect(url, autocommit=True) as db:
            proc = spawn(here, "worker-1")
            assert proc.wait_event("processor_started"), proc.tail()
            ledger = Ledger()
            producer = SteadyProducer(
                REDIS_URL, here.stream, _load(OUTAGE_S + 20, seed=20), ledger, RATE
            ).start()
            try:
                assert wait_for(lambda: row_count(db) > 0, 60), proc.tail()
                victim.refuse(True)
                victim.cut()
                cut_at = time.monotonic()
                max_lag = 0
                while time.monotonic() - cut_at < OUTAGE_S:
                    assert proc.alive(), proc.tail()
                    max_lag = max(max_lag, group_state(sync_redis, here)[1] or 0)
                    time.sleep(0.2)
                victim.refuse(False)
                restored = time.monotonic()
                caught_up = wait_for(
                    lambda: (group_state(sync_redis, here)[1] or 0) < RATE, 90, 0.1
                )
                catch_up_s = time.monotonic() - restored
                assert producer.join(60)
            finally:
                producer.stop()
            assert producer.error is None, producer.error
            assert caught_up, proc.tail()
            assert max_lag > RATE, "the stream should have buffered the outage"

            outcome = assert_invariant(db, sync_redis, here, ledger, timeout=90)
            m = proc.metrics()
            assert m.value("processor_dead_letters_total") == 0
            errors = m.value("processor_db_errors_total")
            assert errors > 0, "the outage was never seen"
            # Counted exactly: every valid entry a new row or a counted duplicate.
            inserted = m.value("processor_positions_inserted_total")
            duplicates = m.value("processor_duplicates_total")
            assert inserted == outcome.rows
            assert inserted + duplicates == ledger.valid
            assert proc.terminate() == 0
    record(
        **outcome.summary(),
        outage_s=OUTAGE_S,
        backlog_max=max_lag,
        catch_up_s=round(catch_up_s, 1),
        db_errors=errors,
        resets=victim.resets,
    )

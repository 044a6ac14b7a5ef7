"""kill -9 on either side of the commit, black-box.

A table lock from the test holds every batch just before its commit, so where the kill
lands is exact: before the commit (rows: none), or after the commit but before the XACK
(rows: all, Redis stalled by a proxy so the MULTI/EXEC never arrives).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from processor.core.settings import Settings
from tests.conftest import REDIS_URL
from tests.faults.harness import (
    Db,
    Ledger,
    ProcessorProcess,
    Spawner,
    TableLock,
    TcpProxy,
    add_items,
    assert_invariant,
    blocked_writers,
    group_state,
    redis_port,
    row_count,
    valid_items,
    wait_for,
)

pytestmark = pytest.mark.faults

ENTRIES = 1000  # two batches of 500, both held at the lock


def _hold_two_batches(
    spawn: Spawner,
    settings: Settings,
    client: redis.Redis,
    db: Db,
    lock: TableLock,
    redis_url: str | None = None,
) -> tuple[Ledger, ProcessorProcess]:
    # Batches sealed by size only: the two batches hold exactly 500 entries each.
    settings = settings.model_copy(update={"batch_max_age_ms": 5000})
    proc = spawn(settings, "worker-1", redis_url=redis_url or REDIS_URL)
    assert proc.wait_event("processor_started"), proc.tail()
    lock.acquire()
    ledger = Ledger()
    add_items(client, settings.stream, valid_items(50, ENTRIES // 50), ledger)
    assert wait_for(lambda: blocked_writers(db) == 2, 60), "both batches should wait on the lock"
    assert group_state(client, settings)[0] == ENTRIES
    return ledger, proc


def processor_backends(db: Db) -> int:
    """Backends of processor connections to this database (live or orphaned)."""
    found = db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'processor'"
    ).fetchone()
    assert found is not None
    value = found[0]
    assert isinstance(value, int)
    return value


def test_kill_9_before_the_commit_loses_nothing(
    fast: Settings,
    sync_redis: redis.Redis,
    sync_db: Db,
    spawn: Spawner,
    table_lock: TableLock,
    record: Callable[..., None],
) -> None:
    ledger, first = _hold_two_batches(spawn, fast, sync_redis, sync_db, table_lock)
    first.kill9()
    table_lock.release()
    # The orphaned INSERTs run now, but nobody commits them: their backends end with
    # their transactions rolled back.
    assert wait_for(lambda: processor_backends(sync_db) == 0, 60)
    assert row_count(sync_db) == 0
    assert group_state(sync_redis, fast)[0] == ENTRIES

    second = spawn(fast, "worker-1")
    started = time.monotonic()
    outcome = assert_invariant(sync_db, sync_redis, fast, ledger, timeout=30)
    recovered = time.monotonic() - started
    m = second.metrics()
    assert m.value("processor_positions_inserted_total") == ENTRIES
    assert m.value("processor_entries_read_total", source="pending") == ENTRIES
    assert second.terminate() == 0
    record(**outcome.summary(), recovered_s=round(recovered, 1), rows_at_kill=0)


@pytest.mark.parametrize("restart", ["same-name", "new-name"])
def test_kill_9_after_commit_before_xack_counts_duplicates(
    fast: Settings,
    sync_redis: redis.Redis,
    sync_db: Db,
    spawn: Spawner,
    table_lock: TableLock,
    make_proxy: Callable[..., TcpProxy],
    record: Callable[..., None],
    restart: str,
) -> None:
    proxy = make_proxy(redis_port(REDIS_URL))
    via_proxy = f"redis://127.0.0.1:{proxy.port}/0"
    ledger, first = _hold_two_batches(
        spawn, fast, sync_redis, sync_db, table_lock, redis_url=via_proxy
    )
    proxy.pause()  # Redis stalls: the MULTI/EXEC after the commit cannot get through
    table_lock.release()
    assert wait_for(lambda: row_count(sync_db) == ENTRIES, 60), "both batches should commit"
    time.sleep(0.3)  # the acknowledgement is now stuck in the proxy
    first.kill9()
    proxy.cut()  # drop the stuck XACK with the dead process's connections
    proxy.resume()
    assert group_state(sync_redis, fast)[0] == ENTRIES, "nothing may have been acknowledged"

    consumer = "worker-1" if restart == "same-name" else "worker-2"
    second = spawn(fast, consumer, redis_url=via_proxy)
    started = time.monotonic()
    outcome = assert_invariant(sync_db, sync_redis, fast, ledger, timeout=30)
    recovered = time.monotonic() - started
    m = second.metrics()
    assert m.value("processor_positions_inserted_total") == 0
    assert m.value("processor_duplicates_total", stage="database") == ENTRIES
    source = "pending" if restart == "same-name" else "claimed"
    assert m.value("processor_entries_read_total", source=source) == ENTRIES
    if restart == "new-name":
        assert recovered >= fast.claim_idle_ms / 1000 - 0.2
    assert second.terminate() == 0
    record(
        **outcome.summary(),
        db_duplicates=m.value("processor_duplicates_total", stage="database"),
        recovered_s=round(recovered, 1),
    )

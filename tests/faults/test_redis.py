"""Redis faults: restarts with and without persistence, and connections cut during a
blocking read and during the MULTI/EXEC that acknowledges."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from processor.core.settings import Settings
from tests.conftest import REDIS_URL
from tests.entries import bad_entry
from tests.faults.harness import (
    Db,
    Item,
    Ledger,
    RedisServer,
    Spawner,
    TableLock,
    TcpProxy,
    add_items,
    assert_invariant,
    blocked_writers,
    group_state,
    pending_ids,
    redis_port,
    valid_items,
    wait_for,
    wait_stable,
    with_resends,
)

pytestmark = pytest.mark.faults


def _on(settings: Settings, server: RedisServer) -> Settings:
    """The same stream keys on a dedicated server (the checker reads them there)."""
    return settings.model_copy(update={"redis_url": settings.redis_url.__class__(server.url)})


def _with_malformed(items: list[Item], every: int) -> list[Item]:
    kinds = {"json": "malformed_json", "version": "unsupported_version", "missing": "missing_field"}
    out: list[Item] = []
    for i, item in enumerate(items):
        if i % every == every // 2:
            kind = list(kinds)[(i // every) % 3]
            out.append((bad_entry(kind), None, kinds[kind]))
        out.append(item)
    return out


def test_redis_restart_with_aof_keeps_the_pending_list(
    fast: Settings,
    sync_db: Db,
    spawn: Spawner,
    table_lock: TableLock,
    make_redis: Callable[..., RedisServer],
    record: Callable[..., None],
) -> None:
    server = make_redis(appendonly=True)
    settings = _on(fast, server)
    client = server.client()
    try:
        proc = spawn(settings, "worker-1", redis_url=server.url)
        assert proc.wait_event("processor_started"), proc.tail()
        table_lock.acquire()  # nothing can be acknowledged while Redis goes down
        ledger = Ledger()
        add_items(client, settings.stream, with_resends(valid_items(100, 30), 0.05, 2), ledger)
        assert wait_for(lambda: blocked_writers(sync_db) >= 1, 20)
        assert wait_stable(lambda: group_state(client, settings)[0], 0.6, 60)
        before = pending_ids(client, settings)
        server.kill9()
        time.sleep(1.0)
        server.start()
        after = pending_ids(client, settings)
        assert after == before, "the pending list must survive the restart"
        table_lock.release()
        outcome = assert_invariant(sync_db, client, settings, ledger, timeout=60)
        m = proc.metrics()
        assert m.value("processor_group_recreated_total") == 0
        assert m.value("processor_redis_errors_total") > 0
        assert proc.terminate() == 0
    finally:
        client.close()
    record(**outcome.summary(), pending_across_restart=len(before))


def test_redis_restart_without_persistence_recreates_the_group(
    fast: Settings,
    sync_db: Db,
    spawn: Spawner,
    make_redis: Callable[..., RedisServer],
    record: Callable[..., None],
) -> None:
    server = make_redis(appendonly=False)
    settings = _on(fast, server)
    client = server.client()
    outage_s = 4.0
    try:
        proc = spawn(settings, "worker-1", redis_url=server.url)
        ledger = Ledger()
        first = valid_items(100, 20)
        add_items(client, settings.stream, first, ledger)
        assert_invariant(sync_db, client, settings, ledger, timeout=30)

        server.kill9()
        time.sleep(0.5)
        cpu_before, lines_before = proc.cpu_s(), proc.log_lines()
        time.sleep(outage_s - 0.5)
        cpu_used, lines = proc.cpu_s() - cpu_before, proc.log_lines() - lines_before
        server.start()  # empty: the stream, the group and its pending list are gone

        # New positions, plus 100 the old stream had already delivered (stored: duplicates).
        add_items(
            client, settings.stream, valid_items(100, 20, start_ms=20_000) + first[:100], ledger
        )
        outcome = assert_invariant(sync_db, client, settings, ledger, timeout=30)
        m = proc.metrics()
        recreated = m.value("processor_group_recreated_total")
        assert recreated >= 1
        assert proc.alive()
        # No hot loop while Redis was down: backoff-paced retries only.
        assert cpu_used < 0.25 * (outage_s - 0.5), f"{cpu_used:.2f}s CPU during the outage"
        assert lines < 20 * outage_s, f"{lines} log lines during the outage"
        assert proc.terminate() == 0
    finally:
        client.close()
    record(
        **outcome.summary(),
        outage_s=outage_s,
        group_recreated=recreated,
        cpu_s_during_outage=round(cpu_used, 2),
        log_lines_during_outage=lines,
    )


def test_connection_dropped_during_blocking_read(
    fast: Settings,
    sync_redis: redis.Redis,
    sync_db: Db,
    spawn: Spawner,
    make_proxy: Callable[..., TcpProxy],
    record: Callable[..., None],
) -> None:
    proxy = make_proxy(redis_port(REDIS_URL))
    proc = spawn(fast, "worker-1", redis_url=f"redis://127.0.0.1:{proxy.port}/0")
    assert proc.wait_event("processor_started"), proc.tail()
    # An idle stream: cut twice while the read is blocked server-side.
    proxy.cut_on(b"BLOCK", forward=True, times=2, delay_s=0.05)
    assert wait_for(lambda: proxy.fired() == 2, 60)
    # Entries waiting: three reads deliver entries whose reply never arrives. They are
    # pending for this consumer but unknown to it, until its claimer takes them back.
    proxy.pause(up=True, down=False)
    ledger = Ledger()
    add_items(sync_redis, fast.stream, valid_items(100, 30), ledger)
    proxy.clear_triggers()
    proxy.cut_on(b"BLOCK", forward=True, times=3, delay_s=0.1)
    proxy.resume()
    outcome = assert_invariant(sync_db, sync_redis, fast, ledger, timeout=30)
    m = proc.metrics()
    claimed = m.value("processor_entries_read_total", source="claimed")
    read_errors = m.value("processor_redis_errors_total", operation="read")
    assert proxy.fired() == 3
    assert read_errors >= 5
    assert claimed > 0, "entries of a lost reply come back through the claimer"
    assert m.value("processor_positions_inserted_total") == len(ledger.ids_by_key)
    assert proc.terminate() == 0
    record(**outcome.summary(), cuts=5, read_errors=read_errors, reclaimed=claimed)


def test_connection_dropped_during_xack(
    fast: Settings,
    sync_redis: redis.Redis,
    sync_db: Db,
    spawn: Spawner,
    make_proxy: Callable[..., TcpProxy],
    record: Callable[..., None],
) -> None:
    proxy = make_proxy(redis_port(REDIS_URL))
    proc = spawn(fast, "worker-1", redis_url=f"redis://127.0.0.1:{proxy.port}/0")
    assert proc.wait_event("processor_started"), proc.tail()
    # Three EXECs run and lose their reply; three never reach Redis.
    proxy.cut_on(b"$4\r\nEXEC\r\n", forward=True, times=3)
    proxy.cut_on(b"$4\r\nEXEC\r\n", forward=False, times=3)
    ledger = Ledger()
    add_items(sync_redis, fast.stream, _with_malformed(valid_items(100, 30), 100), ledger)
    # Exactly one dead letter per malformed entry: a lost EXEC reply is not re-executed.
    outcome = assert_invariant(sync_db, sync_redis, fast, ledger, timeout=30)
    m = proc.metrics()
    ack_errors = m.value("processor_redis_errors_total", operation="ack")
    assert proxy.fired() == 6
    assert ack_errors >= 6
    assert proc.terminate() == 0
    record(**outcome.summary(), cuts=6, ack_errors=ack_errors)

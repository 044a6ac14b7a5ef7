"""PostgreSQL faults: an outage under load, resets during COMMIT, statement timeouts, and a
row the database refuses.

The processor reaches PostgreSQL through a TCP proxy the test can make refuse and cut.
The outage lasts 15 s by default; FAULT_LONG=1 makes it the full 60 s of the issue.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from processor.core.settings import Settings
from tests.conftest import ADMIN_HOST, ADMIN_PORT, REDIS_URL
from tests.entries import bad_entry
from tests.faults.harness import (
    Db,
    Item,
    Ledger,
    Spawner,
    SteadyProducer,
    TableLock,
    TcpProxy,
    add_items,
    assert_invariant,
    blocked_writers,
    db_url_via,
    group_state,
    pending_ids,
    row_count,
    valid_items,
    wait_for,
    wait_stable,
    with_resends,
)

pytestmark = pytest.mark.faults

LONG = os.environ.get("FAULT_LONG") == "1"
OUTAGE_S = 60.0 if LONG else 15.0
RATE = 400  # entries per second from the producer


def _load(seconds: float, seed: int) -> Iterator[Item]:
    """Distinct positions from 40 devices, 3 % re-sent, 1 in 500 malformed."""
    items = with_resends(valid_items(40, int(seconds * RATE / 40) + 1), 0.03, seed)
    kinds = ["json", "version", "missing"]
    reasons = {
        "json": "malformed_json",
        "version": "unsupported_version",
        "missing": "missing_field",
    }
    for i, item in enumerate(items):
        if i % 500 == 250:
            kind = kinds[(i // 500) % 3]
            yield bad_entry(kind), None, reasons[kind]
        yield item


def _via_proxy(database_url: str, proxy: TcpProxy) -> str:
    return db_url_via(database_url, proxy.port)


@pytest.mark.timeout(300 if LONG else 240)
def test_database_outage_under_load_pauses_and_recovers(
    fast: Settings,
    database_url: str,
    sync_redis: redis.Redis,
    sync_db: Db,
    spawn: Spawner,
    make_proxy: Callable[..., TcpProxy],
    record: Callable[..., None],
) -> None:
    pg = make_proxy(ADMIN_PORT, ADMIN_HOST)
    proc = spawn(fast, "worker-1", database_url=_via_proxy(database_url, pg))
    assert proc.wait_event("processor_started"), proc.tail()
    ledger = Ledger()
    producer = SteadyProducer(
        REDIS_URL, fast.stream, _load(OUTAGE_S + 10, seed=3), ledger, RATE
    ).start()
    try:
        assert wait_for(lambda: row_count(sync_db) > 0, 60), proc.tail()
        rss_before = proc.rss_kib()
        pg.refuse(True)
        pg.cut()
        outage_started = time.monotonic()
        # Batches that committed just before the cut finish acknowledging, and reading
        # stops once every slot holds a batch: then rows and pending stay as they are.
        frozen = wait_stable(
            lambda: (row_count(sync_db), group_state(sync_redis, fast)[0]), 1, OUTAGE_S
        )
        assert frozen, f"rows and pending kept changing during the outage\n{proc.tail()}"
        rows_frozen = row_count(sync_db)
        pending_frozen = pending_ids(sync_redis, fast)
        bound = fast.batches_in_flight * fast.batch_max_rows + fast.read_count
        max_pending = max_rss = 0
        while time.monotonic() - outage_started < OUTAGE_S:
            max_pending = max(max_pending, group_state(sync_redis, fast)[0])
            max_rss = max(max_rss, proc.rss_kib())
            time.sleep(0.2)
        assert proc.alive(), proc.tail()
        still_pending = pending_ids(sync_redis, fast)
        rows_after = row_count(sync_db)
        lag_at_end = group_state(sync_redis, fast)[1]
        pg.refuse(False)
        restored = time.monotonic()
        caught_up = wait_for(lambda: (group_state(sync_redis, fast)[1] or 0) < RATE, 60, 0.1)
        catch_up_s = time.monotonic() - restored
        assert producer.join(30)
    finally:
        producer.stop()
    assert producer.error is None, producer.error
    assert caught_up, proc.tail()

    # Nothing acknowledged, nothing stored, reading paused, memory flat meanwhile.
    assert rows_after == rows_frozen
    assert pending_frozen <= still_pending, "entries were acknowledged during the outage"
    assert max_pending <= bound, f"pending {max_pending} > {bound}"
    assert max_rss - rss_before < 40 * 1024, f"RSS grew {max_rss - rss_before} KiB"
    assert (lag_at_end or 0) > RATE, "the stream should have buffered the outage"

    outcome = assert_invariant(sync_db, sync_redis, fast, ledger, timeout=60)
    m = proc.metrics()
    assert m.value("processor_db_errors_total", error_class="connection") > 0
    assert m.value("processor_dead_letters_total", reason="storage_rejected") == 0
    # A lone instance never takes entries from itself as if they were abandoned.
    assert m.value("processor_entries_read_total", source="claimed") == 0
    assert proc.terminate() == 0
    record(
        **outcome.summary(),
        outage_s=OUTAGE_S,
        max_pending=max_pending,
        pending_bound=bound,
        rss_before_kib=rss_before,
        rss_max_kib=max_rss,
        backlog_at_restore=lag_at_end,
        catch_up_s=round(catch_up_s, 1),
        db_connection_errors=m.value("processor_db_errors_total", error_class="connection"),
    )


def test_instance_killed_during_outage_does_not_dead_letter_its_entries(
    fast: Settings,
    database_url: str,
    sync_redis: redis.Redis,
    sync_db: Db,
    spawn: Spawner,
    make_proxy: Callable[..., TcpProxy],
    record: Callable[..., None],
) -> None:
    """A transient outage longer than max_deliveries x claim timeout, then a crash: the
    entries the instance held were delivered once, not once per claim round."""
    settings = fast.model_copy(update={"max_deliveries": 3})
    pg = make_proxy(ADMIN_PORT, ADMIN_HOST)
    url = _via_proxy(database_url, pg)
    first = spawn(settings, "worker-1", database_url=url)
    assert first.wait_event("processor_started"), first.tail()
    pg.refuse(True)
    pg.cut()
    ledger = Ledger()
    add_items(sync_redis, settings.stream, valid_items(50, 20), ledger)
    outage_s = (settings.max_deliveries + 2) * settings.claim_idle_ms / 1000
    time.sleep(outage_s)
    held = group_state(sync_redis, settings)[0]
    assert held > 0
    # Its claimer kept re-taking them (idle times reset) without counting deliveries.
    rows: Any = sync_redis.xpending_range(settings.stream, settings.group, "-", "+", 10_000)
    assert {r["times_delivered"] for r in rows} == {1}
    assert max(r["time_since_delivered"] for r in rows) < settings.claim_idle_ms + 1000
    first.kill9()
    pg.refuse(False)
    second = spawn(settings, "worker-1", database_url=url)
    outcome = assert_invariant(sync_db, sync_redis, settings, ledger, timeout=30)
    assert second.terminate() == 0
    record(**outcome.summary(), outage_s=outage_s, held_at_kill=held)


def test_connection_reset_during_commit(
    fast: Settings,
    database_url: str,
    sync_redis: redis.Redis,
    sync_db: Db,
    spawn: Spawner,
    make_proxy: Callable[..., TcpProxy],
    record: Callable[..., None],
) -> None:
    pg = make_proxy(ADMIN_PORT, ADMIN_HOST)
    proc = spawn(fast, "worker-1", database_url=_via_proxy(database_url, pg))
    assert proc.wait_event("processor_started"), proc.tail()
    # Three COMMITs reach the server and their replies are lost; three never arrive.
    pg.cut_on(b"COMMIT;", forward=True, times=3)
    pg.cut_on(b"COMMIT;", forward=False, times=3)
    ledger = Ledger()
    add_items(sync_redis, fast.stream, with_resends(valid_items(100, 40), 0.03, 5), ledger)
    outcome = assert_invariant(sync_db, sync_redis, fast, ledger, timeout=60)
    assert pg.fired() == 6
    m = proc.metrics()
    assert m.value("processor_db_errors_total", error_class="connection") >= 6
    # The batches whose COMMIT went through were written again: duplicates, not rows.
    db_dups = m.value("processor_duplicates_total", stage="database")
    assert db_dups > 0
    assert m.value("processor_positions_inserted_total") + db_dups >= len(ledger.ids_by_key)
    assert proc.terminate() == 0
    record(**outcome.summary(), cuts=6, db_duplicates=db_dups)


def test_statement_timeout_is_retried(
    fast: Settings,
    sync_redis: redis.Redis,
    sync_db: Db,
    spawn: Spawner,
    table_lock: TableLock,
    record: Callable[..., None],
) -> None:
    settings = fast.model_copy(update={"db_statement_timeout_ms": 300})
    proc = spawn(settings, "worker-1")
    assert proc.wait_event("processor_started"), proc.tail()
    table_lock.acquire()
    ledger = Ledger()
    add_items(sync_redis, settings.stream, valid_items(100, 20), ledger)
    assert wait_for(lambda: blocked_writers(sync_db) > 0, 60)

    def timeouts_so_far() -> float:
        return proc.metrics().value("processor_db_errors_total", error_class="timeout")

    assert wait_for(lambda: timeouts_so_far() >= 2, 60), proc.tail()  # several time out
    table_lock.release()
    outcome = assert_invariant(sync_db, sync_redis, settings, ledger, timeout=30)
    m = proc.metrics()
    timeouts = m.value("processor_db_errors_total", error_class="timeout")
    assert timeouts >= 2
    assert proc.terminate() == 0
    record(**outcome.summary(), statement_timeouts=timeouts)


def test_row_level_error_dead_letters_only_that_entry(
    fast: Settings,
    sync_redis: redis.Redis,
    sync_db: Db,
    spawn: Spawner,
    record: Callable[..., None],
) -> None:
    sync_db.execute(
        "ALTER TABLE telemetry.positions ADD CONSTRAINT fault_poison"
        " CHECK (device_id NOT LIKE 'POISON%')"
    )
    try:
        items = valid_items(100, 30)
        poison = [(e, k) for e, k, _ in valid_items(3, 4, prefix="POISON")]
        for n, (fields, _) in enumerate(poison):
            items.insert(250 * n + 17, (fields, None, "storage_rejected"))
        ledger = Ledger()
        add_items(sync_redis, fast.stream, items, ledger)
        proc = spawn(fast, "worker-1")
        outcome = assert_invariant(sync_db, sync_redis, fast, ledger, timeout=60)
        m = proc.metrics()
        assert m.value("processor_dead_letters_total", reason="storage_rejected") == len(poison)
        assert m.value("processor_positions_inserted_total") == len(ledger.ids_by_key)
        assert proc.terminate() == 0
    finally:
        sync_db.execute("ALTER TABLE telemetry.positions DROP CONSTRAINT IF EXISTS fault_poison")
    record(**outcome.summary())


# PostgreSQL's Terminate message: what a client sends when it closes a connection.
TERMINATE = b"X\x00\x00\x00\x04"


@pytest.mark.timeout(90)
def test_migrate_exits_when_the_server_vanishes_before_the_close(
    database_url: str, make_proxy: Callable[..., TcpProxy]
) -> None:
    """The server goes silent (no FIN, no RST) as the command closes its connection:
    `processor migrate` still exits, within its bounded close."""
    import subprocess
    import sys
    from pathlib import Path

    from processor.storage.pool import CLOSE_TIMEOUT_S

    pg = make_proxy(ADMIN_PORT, ADMIN_HOST)
    pg.stall_on(TERMINATE)
    started = time.monotonic()
    done = subprocess.run(
        [str(Path(sys.executable).with_name("processor")), "migrate"],
        env={
            **os.environ,
            "PROCESSOR_DATABASE_URL": _via_proxy(database_url, pg),
            "PROCESSOR_LOG_FORMAT": "json",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert "already applied" in done.stdout
    assert pg.fired() == 1  # the close really met a silent server
    assert took < CLOSE_TIMEOUT_S + 20, took

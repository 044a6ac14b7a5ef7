"""SIGTERM with batches stuck at the database, and scaling 1 → 3 → 1 under load."""

from __future__ import annotations

import itertools
import signal
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from processor.core.settings import Settings
from tests.conftest import REDIS_URL
from tests.faults.harness import (
    Db,
    Item,
    Ledger,
    ProcessorProcess,
    Spawner,
    SteadyProducer,
    TableLock,
    add_items,
    assert_invariant,
    blocked_writers,
    group_state,
    row_count,
    valid_items,
    wait_for,
    with_resends,
)

pytestmark = pytest.mark.faults


def test_sigterm_while_batches_wait_finishes_them_before_exit(
    fast: Settings,
    sync_redis: redis.Redis,
    sync_db: Db,
    spawn: Spawner,
    table_lock: TableLock,
    record: Callable[..., None],
) -> None:
    proc = spawn(fast, "worker-1")
    assert proc.wait_event("processor_started"), proc.tail()
    table_lock.acquire()
    ledger = Ledger()
    add_items(sync_redis, fast.stream, valid_items(100, 30), ledger)
    assert wait_for(lambda: blocked_writers(sync_db) >= 1, 20)
    held = group_state(sync_redis, fast)[0]
    proc.signal(signal.SIGTERM)
    time.sleep(1.5)  # shorter than PROCESSOR_SHUTDOWN_TIMEOUT_S: it must wait for the commit
    assert proc.alive(), "it must not exit with batches in flight"
    table_lock.release()
    assert proc.wait(20) == 0, proc.tail()
    stored_at_exit = row_count(sync_db)
    assert group_state(sync_redis, fast)[0] == 0, "everything it read was acknowledged"
    assert stored_at_exit > 0

    rest = spawn(fast, "worker-1")
    outcome = assert_invariant(sync_db, sync_redis, fast, ledger, timeout=30)
    assert rest.terminate() == 0
    record(**outcome.summary(), held_at_sigterm=held, stored_at_exit=stored_at_exit)


def test_sigterm_stuck_past_shutdown_timeout_leaves_entries_pending(
    fast: Settings,
    sync_redis: redis.Redis,
    sync_db: Db,
    spawn: Spawner,
    table_lock: TableLock,
    record: Callable[..., None],
) -> None:
    settings = fast.model_copy(update={"shutdown_timeout_s": 2})
    proc = spawn(settings, "worker-1")
    assert proc.wait_event("processor_started"), proc.tail()
    table_lock.acquire()
    ledger = Ledger()
    add_items(sync_redis, settings.stream, valid_items(100, 30), ledger)
    assert wait_for(lambda: blocked_writers(sync_db) >= 1, 20)
    proc.signal(signal.SIGTERM)
    started = time.monotonic()
    code = proc.wait(30)
    exited_s = time.monotonic() - started
    assert code == 1, proc.tail()  # unclean: batches abandoned, nothing acknowledged
    # One budget for everything (plus closing the pool), not one per stage.
    assert exited_s < settings.shutdown_timeout_s + 4, proc.tail()
    held = group_state(sync_redis, settings)[0]
    assert held > 0
    table_lock.release()
    assert row_count(sync_db) == 0

    rest = spawn(settings, "worker-1")
    outcome = assert_invariant(sync_db, sync_redis, settings, ledger, timeout=30)
    assert rest.terminate() == 0
    record(**outcome.summary(), exit_code=code, exit_s=round(exited_s, 1), left_pending=held)


def endless_items(devices: int, resend_rate: float, seed: int) -> Iterator[Item]:
    """Distinct positions round after round (each with its resends), never running out:
    a producer fed from it keeps adding until it is stopped, however slow the machine."""
    seconds = 30
    for round_ in itertools.count():
        fresh = valid_items(devices, seconds, start_ms=round_ * seconds * 1000)
        yield from with_resends(fresh, resend_rate, seed=seed + round_)


def inserted(proc: ProcessorProcess) -> float:
    """Positions the instance has stored so far (0 until its metrics endpoint is up)."""
    assert proc.alive(), f"{proc.name} exited:\n{proc.tail()}"
    if proc.count_events("http_listening") == 0:
        return 0.0
    return proc.metrics().value("processor_positions_inserted_total")


# Each phase lasts until what it is about has happened (not a fixed time), with deadlines
# for a loaded machine, where a child can take several seconds just to start.
PHASE_S = 90


@pytest.mark.timeout(600)
def test_scale_1_to_3_to_1_under_load(
    fast: Settings,
    sync_redis: redis.Redis,
    sync_db: Db,
    spawn: Spawner,
    record: Callable[..., None],
) -> None:
    rate = 500
    ledger = Ledger()
    a = spawn(fast, "worker-a")
    assert a.wait_event("processor_started", PHASE_S), a.tail()
    items = endless_items(100, 0.03, seed=11)
    producer = SteadyProducer(REDIS_URL, fast.stream, items, ledger, rate).start()
    max_lag = 0

    def watch_until(condition: Callable[[], bool], timeout: float = PHASE_S) -> bool:
        """Track the lag while the producer feeds, until the condition holds or time is up."""
        nonlocal max_lag
        deadline = time.monotonic() + timeout
        while True:
            assert producer.error is None, producer.error
            assert not producer.done(), "the producer stopped feeding"
            max_lag = max(max_lag, group_state(sync_redis, fast)[1] or 0)
            if condition():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    try:
        # A second's worth of positions per phase alone; the middle one lasts until both
        # new instances have stored some.
        alone = watch_until(lambda: inserted(a) >= rate)
        assert alone, f"worker-a alone: {inserted(a)} stored\n{a.tail()}"
        b = spawn(fast, "worker-b")
        c = spawn(fast, "worker-c")
        took_work = watch_until(lambda: inserted(b) > 0 and inserted(c) > 0)
        helpers = [b.metrics(), c.metrics()]
        codes = [b.terminate(), c.terminate()]
        alone_from = inserted(a)
        alone = watch_until(lambda: inserted(a) >= alone_from + rate)
        assert alone, f"worker-a alone again: {inserted(a) - alone_from} stored\n{a.tail()}"
    finally:
        producer.stop()
    assert producer.error is None, producer.error
    stopped = time.monotonic()
    assert wait_for(lambda: group_state(sync_redis, fast) == (0, 0), PHASE_S), a.tail()
    drained_s = time.monotonic() - stopped
    outcome = assert_invariant(sync_db, sync_redis, fast, ledger, timeout=PHASE_S)
    assert codes == [0, 0]
    assert took_work, "each instance took work (within the deadline)"
    for scrape in helpers:
        assert scrape.value("processor_positions_inserted_total") > 0, "each instance took work"
    assert a.terminate() == 0
    record(
        **outcome.summary(),
        rate_per_s=rate,
        max_lag=max_lag,
        drained_after_producer_s=round(drained_s, 1),
        exit_codes=codes,
    )

"""Claims between instances: one that dies for good, one that stalls past the claim timeout."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from processor.core.settings import Settings
from tests.faults.harness import (
    Db,
    Item,
    Ledger,
    Spawner,
    TableLock,
    add_items,
    assert_invariant,
    blocked_writers,
    group_state,
    valid_items,
    wait_for,
    with_resends,
)

pytestmark = pytest.mark.faults


def test_instance_that_dies_for_good_is_claimed_by_survivor(
    fast: Settings,
    sync_redis: redis.Redis,
    sync_db: Db,
    spawn: Spawner,
    table_lock: TableLock,
    record: Callable[..., None],
) -> None:
    a = spawn(fast, "worker-a")
    b = spawn(fast, "worker-b")
    assert a.wait_event("processor_started")
    assert b.wait_event("processor_started")
    table_lock.acquire()  # both hold batches at the lock: A dies with work in flight
    ledger = Ledger()
    items = with_resends(valid_items(100, 40), 0.05, seed=1)
    add_items(sync_redis, fast.stream, items, ledger)
    assert wait_for(lambda: blocked_writers(sync_db) >= 3, 30)
    a.kill9()
    held_by_a = _pending_of(sync_redis, fast, "worker-a")
    assert held_by_a, "A should die holding entries"
    killed_at = time.monotonic()
    table_lock.release()

    outcome = assert_invariant(sync_db, sync_redis, fast, ledger, timeout=60)
    settled_s = time.monotonic() - killed_at
    m = b.metrics()
    claimed = m.value("processor_entries_read_total", source="claimed")
    assert claimed >= len(held_by_a)
    assert settled_s >= fast.claim_idle_ms / 1000 - 0.2
    assert b.terminate() == 0
    record(
        **outcome.summary(),
        held_by_dead_instance=len(held_by_a),
        claimed_by_survivor=claimed,
        settled_s=round(settled_s, 1),
    )


def _pending_of(client: redis.Redis, settings: Settings, consumer: str) -> set[str]:
    rows: Any = client.xpending_range(
        settings.stream, settings.group, "-", "+", 1_000_000, consumername=consumer
    )
    return {r["message_id"].decode() for r in rows}


def test_batch_stalled_past_claim_timeout_is_processed_twice_stored_once(
    fast: Settings,
    sync_redis: redis.Redis,
    sync_db: Db,
    spawn: Spawner,
    table_lock: TableLock,
    record: Callable[..., None],
) -> None:
    a = spawn(fast, "worker-a")
    b = spawn(fast, "worker-b")
    assert a.wait_event("processor_started")
    assert b.wait_event("processor_started")
    table_lock.acquire()
    ledger = Ledger()
    add_items(sync_redis, fast.stream, valid_items(100, 20), ledger)
    assert wait_for(lambda: blocked_writers(sync_db) >= 3, 60)
    held_from = time.monotonic()
    hold_s = 3 * fast.claim_idle_ms / 1000

    def claimed_so_far() -> float:
        return sum(
            p.metrics().value("processor_entries_read_total", source="claimed") for p in (a, b)
        )

    # Both stall longer than the claim timeout (and until claims show): each claims the
    # other's.
    stalled = wait_for(
        lambda: time.monotonic() - held_from >= hold_s and claimed_so_far() > 0, 90, 0.2
    )
    assert stalled, "the stalled batches should have been claimed"
    pending_at_release = group_state(sync_redis, fast)[0]
    table_lock.release()

    outcome = assert_invariant(sync_db, sync_redis, fast, ledger, timeout=60)
    scrapes = [a.metrics(), b.metrics()]
    claimed = sum(s.value("processor_entries_read_total", source="claimed") for s in scrapes)
    db_dups = sum(s.value("processor_duplicates_total", stage="database") for s in scrapes)
    state_dups = sum(s.value("processor_duplicates_total", stage="state") for s in scrapes)
    inserted = sum(s.value("processor_positions_inserted_total") for s in scrapes)
    assert claimed > 0, "the stalled batches should have been claimed"
    assert db_dups > 0, "claimed entries were written a second time, as duplicates"
    assert inserted == outcome.rows == len(ledger.ids_by_key)
    assert a.terminate() == 0
    assert b.terminate() == 0
    record(
        **outcome.summary(),
        lock_held_s=hold_s,
        pending_at_release=pending_at_release,
        claimed=claimed,
        db_duplicates=db_dups,
        state_duplicates=state_dups,
    )


def test_lone_instance_stalled_by_database_never_claims_from_itself(
    fast: Settings,
    sync_redis: redis.Redis,
    sync_db: Db,
    spawn: Spawner,
    table_lock: TableLock,
    record: Callable[..., None],
) -> None:
    """Reads bigger than a batch: while the reader waits for a slot, the rest of its read
    waits with it, longer than the claim timeout. The claimer must see those entries as
    held, not abandoned (else they are processed twice in one process: a malformed one
    dead-lettered twice)."""
    settings = fast.model_copy(update={"batch_max_rows": 200, "read_count": 500})
    proc = spawn(settings, "worker-1")
    assert proc.wait_event("processor_started"), proc.tail()
    table_lock.acquire()
    ledger = Ledger()
    add_items(sync_redis, settings.stream, _with_malformed(valid_items(100, 30), 50), ledger)
    assert wait_for(lambda: blocked_writers(sync_db) >= 1, 20)
    time.sleep(2 * settings.claim_idle_ms / 1000)
    held = group_state(sync_redis, settings)[0]
    table_lock.release()
    outcome = assert_invariant(sync_db, sync_redis, settings, ledger, timeout=60)
    m = proc.metrics()
    claimed = m.value("processor_entries_read_total", source="claimed")
    state_dups = m.value("processor_duplicates_total", stage="state")
    assert claimed == 0
    assert state_dups == 0
    # Reading paused: two batches in flight, one waiting for a slot, the rest of one read.
    bound = (settings.batches_in_flight + 1) * settings.batch_max_rows + settings.read_count
    assert held <= bound
    assert proc.terminate() == 0
    record(**outcome.summary(), held_while_stalled=held, bound=bound, claimed=claimed)


def _with_malformed(items: list[Item], every: int) -> list[Item]:
    from tests.entries import bad_entry

    out: list[Item] = []
    for i, item in enumerate(items):
        if i % every == every // 2:
            out.append((bad_entry("json"), None, "malformed_json"))
        out.append(item)
    return out

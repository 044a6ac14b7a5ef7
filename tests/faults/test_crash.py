"""kill -9 and SIGTERM of a real `processor run`: nothing lost, nothing stored twice."""

from __future__ import annotations

import os
import random
import signal

import psycopg
import pytest
import redis

from processor.core.settings import Settings
from tests.entries import BASE_MS, entry
from tests.faults.harness import ProcessorProcess, wait_for

pytestmark = pytest.mark.faults

DEVICES = 200
SECONDS = 100


def prefill(client: redis.Redis, settings: Settings, seed: int) -> int:
    """Entries of DEVICES x SECONDS positions, 5 % re-sent, shuffled; returns distinct keys."""
    entries = [
        entry(f"K{d:04d}", BASE_MS + s * 1000) for d in range(DEVICES) for s in range(SECONDS)
    ]
    rng = random.Random(seed)
    entries += rng.sample(entries, len(entries) // 20)
    rng.shuffle(entries)
    pipe = client.pipeline(transaction=False)
    for fields in entries:
        pipe.xadd(settings.stream, fields)  # type: ignore[arg-type]
    pipe.execute()
    return DEVICES * SECONDS


def rows(db: psycopg.Connection[tuple[object, ...]]) -> int:
    found = db.execute("SELECT count(*) FROM telemetry.positions").fetchone()
    assert found is not None
    count = found[0]
    assert isinstance(count, int)
    return count


def assert_exactly_once(
    db: psycopg.Connection[tuple[object, ...]],
    client: redis.Redis,
    settings: Settings,
    expected: int,
) -> None:
    assert rows(db) == expected
    found = db.execute(
        "SELECT count(*) FROM (SELECT 1 FROM telemetry.positions GROUP BY device_id, ts"
        " HAVING count(*) > 1) d"
    ).fetchone()
    assert found == (0,)
    assert client.xpending(settings.stream, settings.group)["pending"] == 0
    assert client.xlen(settings.dlq_stream) == 0


KILL_RUNS = int(os.environ.get("KILL_LOOP", "1"))


@pytest.mark.parametrize("run", range(KILL_RUNS))
@pytest.mark.parametrize("same_name", [True, False], ids=["restart-same-name", "restart-new-name"])
def test_kill_9_mid_stream_then_restart_stores_everything_once(
    settings: Settings,
    sync_redis: redis.Redis,
    sync_db: psycopg.Connection[tuple[object, ...]],
    same_name: bool,
    run: int,
) -> None:
    fast = settings.model_copy(update={"claim_idle_ms": 1500, "batch_max_rows": 500})
    expected = prefill(sync_redis, fast, seed=run)
    first = ProcessorProcess(fast, consumer="worker-1").start()
    try:
        assert wait_for(lambda: rows(sync_db) > 3000, 60), first.output()
        first.kill9()
        stored_at_kill = rows(sync_db)
        assert stored_at_kill < expected, "killed too late to test anything"
        assert sync_redis.xpending(fast.stream, fast.group)["pending"] > 0
    finally:
        first.close()
    second = ProcessorProcess(
        fast, "--until-idle", consumer="worker-1" if same_name else "worker-2"
    ).start()
    try:
        assert second.wait(120) == 0, second.output()
    finally:
        second.close()
    assert_exactly_once(sync_db, sync_redis, fast, expected)


def test_sigterm_mid_stream_exits_cleanly_with_everything_acknowledged(
    settings: Settings,
    sync_redis: redis.Redis,
    sync_db: psycopg.Connection[tuple[object, ...]],
) -> None:
    slow = settings.model_copy(update={"batch_max_rows": 200, "read_count": 200})
    expected = prefill(sync_redis, slow, seed=99)
    proc = ProcessorProcess(slow, consumer="worker-1").start()
    try:
        assert wait_for(lambda: rows(sync_db) > 2000, 60), proc.output()
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 0, proc.output()
        assert rows(sync_db) < expected
        # Everything it read was committed and acknowledged before it exited.
        assert sync_redis.xpending(slow.stream, slow.group)["pending"] == 0
    finally:
        proc.close()
    rest = ProcessorProcess(slow, "--until-idle", consumer="worker-1").start()
    try:
        assert rest.wait(120) == 0, rest.output()
    finally:
        rest.close()
    assert_exactly_once(sync_db, sync_redis, slow, expected)

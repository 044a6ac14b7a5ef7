"""The same race, whatever the arrival order and however the work is split: identical rows.

A simulated race on the sample event (a stop mid-stage, an offline device uploading its
buffer newest-first after the finish, a speeding car, two cars tied to the millisecond)
is fed three ways — in order, shuffled per device, and in newest-first bursts — into a
database of its own each time, with tiny reads and batches, through real processes: one
`processor run` and two `processor domain` instances working the same notices at once.
Every collection the domain stage writes must come out identical, with no failure
logged (a deadlock would show as `domain_window_failed` or a retry that gave up).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis

from processor.core.settings import load_settings
from processor.storage.migrate import migrate
from processor.tools.event_loader import load_event_rows, read_event_file
from processor.tools.simulator.event import load_event
from processor.tools.simulator.generator import Entry, GeneratorConfig, Simulation
from processor.tools.simulator.scenarios import Offline, Scenario, Speeding, Stop
from tests.conftest import ADMIN_URL, DIRECTUS_FIXTURE, REDIS_URL, _with_database

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TIED_WITH = 1  # entry 6 drives entry 1's exact track, shifted: tied on every stage
TIE_ENTRY = 6
SHIFT_MS = 7_000
SMALL = {  # the sizes that deadlocked the domain stage (issue 13)
    "PROCESSOR_READ_COUNT": "20",
    "PROCESSOR_BATCH_MAX_ROWS": "20",
    "PROCESSOR_DOMAIN_READ_COUNT": "10",
    "PROCESSOR_DOMAIN_BATCH_INTERVAL_S": "0",
}
COLLECTIONS = ("timing_records", "penalties", "stage_results", "alerts")
# Logged failures; a deadlock retried in place is counted too: the lock order rules it out.
FAILURES = ("domain_window_failed", "domain_stage_crashed", "domain_tick_failed")


def race_entries() -> list[Entry]:
    """The simulated race in the simulator's order (by arrival), with the tied copy."""
    sim = Simulation(
        load_event(),
        GeneratorConfig(
            devices=5,
            seed=5,
            time_format="epoch-ms",
            scenarios=(
                Scenario(entry=2, stage=1, action=Stop(fraction=0.5, duration_s=120)),
                Scenario(
                    entry=4,
                    stage=1,
                    action=Offline(
                        before_finish_s=60, upload_after_finish_s=120, order="newest-first"
                    ),
                ),
                Scenario(
                    entry=3, stage=2, action=Speeding(over_kmh=12, duration_s=8, tolerance_kmh=3)
                ),
            ),
        ),
    )
    entries = list(sim.entries())
    imei = {d.id: d.imei for d in sim.event.devices}
    device_of = {e.id: imei[e.device] for e in sim.event.entries}
    source, twin = device_of[TIED_WITH], device_of[TIE_ENTRY]
    copies = []
    for e in entries:
        if e.device_id != source or e.version is None:
            continue
        doc = msgspec.json.decode(e.payload)
        if not isinstance(doc, dict) or not isinstance(doc.get("timestamp"), int):
            continue
        doc["device_id"] = twin
        doc["timestamp"] += SHIFT_MS
        received = doc.get("received_at")
        doc["received_at"] = (received if isinstance(received, int) else doc["timestamp"]) + (
            SHIFT_MS
        )
        copies.append(
            msgspec.structs.replace(
                e,
                device_id=twin,
                ts_ms=e.ts_ms + SHIFT_MS,
                received_ms=e.received_ms + SHIFT_MS,
                payload=msgspec.json.encode(doc),
            )
        )
    return sorted(entries + copies, key=lambda e: (e.received_ms, e.device_id, e.ts_ms))


def in_order(entries: list[Entry], rng: random.Random) -> list[Entry]:
    return list(entries)


def shuffled_per_device(entries: list[Entry], rng: random.Random) -> list[Entry]:
    """Each device's records in a random order; devices still interleaved as they came."""
    by_device: dict[str, list[Entry]] = {}
    for e in entries:
        by_device.setdefault(e.device_id, []).append(e)
    for records in by_device.values():
        rng.shuffle(records)
    cursors = {d: iter(r) for d, r in by_device.items()}
    return [next(cursors[e.device_id]) for e in entries]


def newest_first_bursts(entries: list[Entry], rng: random.Random) -> list[Entry]:
    """Bursts of 5–60 entries, each sent newest first (a buffered upload, over and over)."""
    out: list[Entry] = []
    i = 0
    while i < len(entries):
        size = rng.randint(5, 60)
        out.extend(reversed(entries[i : i + size]))
        i += size
    return out


ORDERS: dict[str, Callable[[list[Entry], random.Random], list[Entry]]] = {
    "in_order": in_order,
    "shuffled_per_device": shuffled_per_device,
    "newest_first_bursts": newest_first_bursts,
}


class Child:
    """A `processor` process with its log in a file of its own."""

    def __init__(self, command: str, env: dict[str, str], *args: str) -> None:
        self.command = command
        self.log = Path(tempfile.mkstemp(prefix=f"order-{command}-", suffix=".log")[1])
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "processor", command, *args],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -9

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.unlink(missing_ok=True)


@pytest.fixture
async def fresh_db() -> AsyncIterator[Callable[[], Any]]:
    """Databases of their own (migrated, Directus tables, the sample event), dropped after."""
    made: list[str] = []
    admin = await asyncpg.connect(ADMIN_URL)

    async def make() -> str:
        name = f"processor_order_{uuid.uuid4().hex[:10]}"
        await admin.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        url = _with_database(ADMIN_URL, name)
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn, load_settings(database_url=url))
            await conn.execute(DIRECTUS_FIXTURE.read_text())
            await load_event_rows(conn, read_event_file())
        finally:
            await conn.close()
        return url

    try:
        yield make
    finally:
        for name in made:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def _until(check: Callable[[], Any], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(0.5)


async def _group_done(redis: aioredis.Redis, stream: str, group: str) -> bool:
    """No entry pending in the group and none it has not read yet."""
    try:
        groups: Any = await redis.xinfo_groups(stream)
    except aioredis.ResponseError:
        return False
    for g in groups:
        name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
        if name == group:
            return bool(g["pending"] == 0 and g.get("lag") == 0)
    return False


async def run_race(url: str, order: list[Entry], tag: str) -> dict[str, list[Any]]:
    """Feed the entries in this order through run + two domain instances; the outputs."""
    prefix = f"test:order:{tag}:{uuid.uuid4().hex[:8]}"
    stream = f"{prefix}:positions"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PROCESSOR_")},
        "PROCESSOR_DATABASE_URL": url,
        "PROCESSOR_REDIS_URL": REDIS_URL,
        "PROCESSOR_STREAM": stream,
        "PROCESSOR_HTTP_ENABLED": "false",
        "PROCESSOR_LOG_FORMAT": "json",
        "PROCESSOR_CLAIM_IDLE_MS": "5000",
        "PROCESSOR_CLAIM_INTERVAL_MS": "1000",
        "PROCESSOR_BLOCK_MS": "200",
        "PROCESSOR_DOMAIN_TICK_S": "1",
        "PROCESSOR_CONFIG_REFRESH_S": "1",
        **SMALL,
    }
    redis = aioredis.Redis.from_url(REDIS_URL)
    children: list[Child] = []
    try:
        core = Child("run", {**env, "PROCESSOR_CONSUMER": f"{tag}-core"})
        children.append(core)
        for n in (1, 2):
            children.append(Child("domain", {**env, "PROCESSOR_CONSUMER": f"{tag}-domain-{n}"}))
        pipe = redis.pipeline(transaction=False)
        for i, e in enumerate(order):
            pipe.xadd(stream, e.fields())  # type: ignore[arg-type]
            if i % 500 == 499:
                await pipe.execute()
        await pipe.execute()
        await _until(
            lambda: _group_done(redis, stream, "processor"), 600, f"{tag}: the core to store all"
        )
        await _until(
            lambda: _group_done(redis, f"{stream}:committed", "domain"),
            600,
            f"{tag}: the domain stage to handle every notice",
        )
        codes = [c.stop() for c in children]
        logs = {f"{c.command}-{i}": c.output() for i, c in enumerate(children)}
        assert codes == [0, 0, 0], {k: v[-3000:] for k, v in logs.items()}
        # One last pass ends with the clock's part: dns/dnf that no record decides.
        final = Child("domain", {**env, "PROCESSOR_CONSUMER": f"{tag}-final"}, "--until-idle")
        children.append(final)
        assert final.proc.wait(300) == 0, final.output()[-3000:]
        logs["final"] = final.output()
        for name, text in logs.items():
            for failure in FAILURES:
                lines = [line for line in text.splitlines() if f'"event": "{failure}"' in line]
                assert not lines, f"{tag} {name}: {failure}\n" + "\n".join(lines)[:3000]
            deadlocks = [line for line in text.splitlines() if '"error_class": "deadlock"' in line]
            assert not deadlocks, f"{tag} {name}: deadlock\n" + "\n".join(deadlocks)[:3000]
        return await outputs(url)
    finally:
        for c in children:
            c.close()
        keys = [k async for k in redis.scan_iter(match=f"{prefix}*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


async def outputs(url: str) -> dict[str, list[Any]]:
    """Every domain output, as published (ids and write times aside) and as recorded."""
    conn = await asyncpg.connect(url)
    try:
        found: dict[str, list[Any]] = {}
        for table in COLLECTIONS:
            rows = await conn.fetch(
                f"SELECT (to_jsonb(t) - 'id' - 'updated_at' - 'created_at')::text AS row"
                f" FROM public.{table} t ORDER BY key"
            )
            found[table] = [r["row"] for r in rows]
        rows = await conn.fetch(
            "SELECT collection, key, data::text FROM telemetry.domain_outputs"
            " ORDER BY collection, key"
        )
        found["domain_outputs"] = [tuple(r) for r in rows]
        found["positions"] = [await conn.fetchval("SELECT count(*) FROM telemetry.positions")]
        return found
    finally:
        await conn.close()


@pytest.mark.timeout(2400)
async def test_same_rows_whatever_the_arrival_order_and_the_instances(
    fresh_db: Callable[[], Any],
) -> None:
    entries = race_entries()
    rng = random.Random(13)
    results = {}
    for name, arrange in ORDERS.items():
        order = arrange(entries, rng)
        assert sorted(map(id, order)) == sorted(map(id, entries))  # a permutation
        results[name] = await run_race(await fresh_db(), order, name)

    if dump := os.environ.get("ORDER_DUMP"):  # for a closer look at a difference
        await asyncio.to_thread(Path(dump).write_bytes, msgspec.json.encode(results))
    reference = results["in_order"]
    stored = reference["positions"][0]
    assert stored == len({(e.device_id, e.ts_ms) for e in entries if e.version is not None})
    results_rows = [msgspec.json.decode(r) for r in reference["stage_results"]]
    assert len(results_rows) > 0
    # The race has what the test is about: a stopped car, an upload, a tie.
    alerts = [msgspec.json.decode(r) for r in reference["alerts"]]
    assert {a["kind"] for a in alerts} >= {"stopped", "signal_lost"}
    by_entry = {(r["stage"], r["entry"]): r for r in results_rows}
    tied = [
        (by_entry[(s, TIED_WITH)]["rank"], by_entry[(s, TIE_ENTRY)]["rank"])
        for s in (1, 2, 3)
        if (s, TIED_WITH) in by_entry
        and (s, TIE_ENTRY) in by_entry
        and by_entry[(s, TIED_WITH)]["status"] == "finished"
    ]
    assert tied, "the tied cars finished no stage"
    assert all(a == b for a, b in tied), tied

    for name, found in results.items():
        for collection, rows in reference.items():
            assert found[collection] == rows, f"{name}: {collection} differs from in_order"

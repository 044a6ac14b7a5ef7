"""Live timing through the real pipeline: simulator → stream → positions → notices →
domain stage → public.timing_records, checked against the simulator's ground truth,
against a replay over the stored positions, and across arrival orders."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from processor.core.settings import Settings
from processor.domain.config import config_from_event_file
from processor.domain.geofences import GeofenceIndex
from processor.domain.timing import recompute_window
from processor.domain_runner.config_source import ConfigSource
from processor.domain_runner.fixes import read_range
from processor.domain_runner.outputs import DomainOutputs
from processor.domain_runner.runner import DomainRunner, notice_settings
from processor.domain_runner.timing_records import record_key
from processor.observability.metrics import Metrics
from processor.storage.pool import create_pool
from processor.stream.client import StreamClient, connect
from processor.tools.event_loader import load_event_rows, read_event_file
from processor.tools.simulator import ground_truth
from processor.tools.simulator.event import load_event
from processor.tools.simulator.generator import Entry, GeneratorConfig, Simulation
from tests.integration.test_pipeline import add_all, drain

pytestmark = pytest.mark.integration

DEVICES = 4
GATES = ("start_line", "split_line", "finish_line")


def simulation() -> Simulation:
    return Simulation(load_event(), GeneratorConfig(devices=DEVICES, seed=3))


async def run_domain(settings: Settings) -> Metrics:
    metrics = Metrics()
    domain = notice_settings(settings)
    redis = connect(domain)
    pool = await create_pool(settings)
    try:
        runner = DomainRunner(
            domain, StreamClient(redis, domain), pool, DomainOutputs(ConfigSource(60)), metrics
        )
        await asyncio.wait_for(runner.run(until_idle=True), 120)
    finally:
        await pool.close()
        await redis.aclose()
    return metrics


async def stored_records(db: asyncpg.Connection) -> dict[str, int]:
    rows = await db.fetch(
        "SELECT key, (extract(epoch FROM crossed_at) * 1000)::bigint AS ms"
        " FROM public.timing_records WHERE source = 'auto'"
    )
    return {r["key"]: r["ms"] for r in rows}


@pytest.fixture
async def event_db(db: asyncpg.Connection) -> asyncpg.Connection:
    await db.execute(
        "TRUNCATE public.timing_records, telemetry.outbox, telemetry.position_attributes,"
        " telemetry.domain_outputs, telemetry.domain_progress"
    )
    await load_event_rows(db, read_event_file())
    return db


async def feed(settings: Settings, redis: aioredis.Redis, entries: list[Entry]) -> None:
    await add_all(redis, settings.stream, [e.fields() for e in entries])
    await drain(settings)
    await run_domain(settings)


async def test_live_timing_matches_ground_truth_and_replay(
    settings: Settings, redis_client: aioredis.Redis, event_db: asyncpg.Connection
) -> None:
    sim = simulation()
    entries = list(sim.entries())
    await feed(settings, redis_client, entries)
    live = await stored_records(event_db)
    assert live, "no timing records were produced"
    print(f"{len(entries)} entries, {len(live)} timing records")

    # Against the ground truth: every gate crossed, to within 0.1 s.
    truth = [r for r in ground_truth.compute(simulation()) if r.kind in GATES]
    rows = await event_db.fetch(
        "SELECT d.imei, t.geofence, (extract(epoch FROM t.crossed_at) * 1000)::bigint AS ms"
        " FROM public.timing_records t JOIN public.entries e ON e.id = t.entry"
        " JOIN public.devices d ON d.id = e.device WHERE t.kind = ANY($1::text[])",
        list(GATES),
    )
    got: dict[tuple[str, int], list[int]] = defaultdict(list)
    for r in rows:
        got[(r["imei"], r["geofence"])].append(r["ms"])
    errors = []
    for t in truth:
        times = got.get((t.device_id, t.geofence), [])
        assert times, f"missed crossing {t.device_id} geofence {t.geofence}"
        errors.append(min(abs(ms - t.exact_ms) for ms in times) / 1000)
    assert len(rows) == len(truth), "phantom or duplicate gate records"
    errors.sort()
    p95 = errors[int(0.95 * (len(errors) - 1))]
    print(f"{len(truth)} gate crossings, p95 error {p95:.4f} s, max {errors[-1]:.4f} s")
    assert p95 <= 0.02

    # Replay equals live: the engine over every stored fix, in one pass.
    config, _ = config_from_event_file(read_event_file())
    index = GeofenceIndex.from_config(config)
    entry_of = {
        d["imei"]: d["id"]
        for d in await event_db.fetch(
            "SELECT d.imei, e.id FROM public.entries e JOIN public.devices d ON d.id = e.device"
        )
    }
    replay: dict[str, int] = {}
    for device, entry_id in entry_of.items():
        fixes = await read_range(event_db, device, 0, 2**53)
        ref: Any = type("E", (), {"id": entry_id})
        for c in recompute_window(fixes, index):
            if c.stage_id is not None:
                replay[record_key(ref, c)] = c.crossed_at_ms
    assert replay == live

    # Every record change went to the outbox with it.
    outbox = await event_db.fetchval("SELECT count(*) FROM telemetry.outbox")
    assert outbox >= len(live)


async def test_same_records_whatever_the_arrival_order(
    settings: Settings, redis_client: aioredis.Redis, event_db: asyncpg.Connection
) -> None:
    entries = list(simulation().entries())
    await feed(settings, redis_client, entries)
    in_order = await stored_records(event_db)

    # Again from scratch, every device's records shuffled and uploaded newest-first in bursts.
    await event_db.execute(
        "TRUNCATE telemetry.positions, public.timing_records, telemetry.outbox,"
        " telemetry.domain_outputs, telemetry.domain_progress"
    )
    await redis_client.delete(settings.stream, settings.notice_stream)
    by_device: dict[str, list[Entry]] = defaultdict(list)
    for e in entries:
        by_device[e.device_id].append(e)
    rng = random.Random(11)
    shuffled: list[Entry] = []
    for device_entries in by_device.values():
        chunks = [device_entries[i : i + 120] for i in range(0, len(device_entries), 120)]
        for chunk in chunks:
            rng.shuffle(chunk) if rng.random() < 0.5 else chunk.reverse()
        rng.shuffle(chunks)
        shuffled.extend(e for chunk in chunks for e in chunk)
    for start in range(0, len(shuffled), 2000):
        await feed(settings, redis_client, shuffled[start : start + 2000])
    assert await stored_records(event_db) == in_order

"""The simulator's sink against the real Redis: every entry lands, in order, decodable."""

from __future__ import annotations

import itertools
import os
import time

import pytest
import redis.asyncio as aioredis

from processor.core.contract import decode_entry
from processor.core.position import Position
from processor.tools.simulator.event import load_event
from processor.tools.simulator.generator import Entry, GeneratorConfig, Simulation
from processor.tools.simulator.sink import Pace, write_entries
from tests.entries import read_stream

pytestmark = pytest.mark.integration
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _entries(count: int, devices: int = 200) -> list[Entry]:
    sim = Simulation(load_event(), GeneratorConfig(devices=devices, seed=2))
    return list(itertools.islice(sim.entries(), count))


async def test_writes_2000_entries(redis_client: aioredis.Redis, stream_prefix: str) -> None:
    key = f"{stream_prefix}:positions"
    entries = _entries(2000)
    try:
        seen: list[Entry] = []
        result = await write_entries(
            iter(entries), url=REDIS_URL, stream=key, batch_size=500, on_entry=seen.append
        )
        assert result.written == 2000
        assert result.batches == 4
        assert seen == entries
        assert await redis_client.xlen(key) == 2000
        stored = await read_stream(redis_client, key)
        assert [fields for _, fields in stored] == [e.fields() for e in entries]
        entry_id, fields = stored[0]
        assert isinstance(decode_entry(entry_id.decode(), fields), Position)
    finally:
        await redis_client.delete(key)
    assert await redis_client.exists(key) == 0


async def test_received_ids_carry_received_at(
    redis_client: aioredis.Redis, stream_prefix: str
) -> None:
    key = f"{stream_prefix}:by-received"
    entries = _entries(600)
    try:
        await write_entries(entries, url=REDIS_URL, stream=key, entry_ids="received")
        stored = await read_stream(redis_client, key)
        assert [int(entry_id.split(b"-")[0]) for entry_id, _ in stored] == [
            e.received_ms for e in entries
        ]
    finally:
        await redis_client.delete(key)


async def test_accelerated_pace_follows_received_at(
    redis_client: aioredis.Redis, stream_prefix: str
) -> None:
    key = f"{stream_prefix}:paced"
    entries = _entries(40, devices=5)  # five devices at 1 Hz: ~8 s of simulated time
    span_s = (entries[-1].received_ms - entries[0].received_ms) / 1000.0
    try:
        started = time.perf_counter()
        await write_entries(entries, url=REDIS_URL, stream=key, pace=Pace(20.0))
        elapsed = time.perf_counter() - started
        assert await redis_client.xlen(key) == 40
        assert span_s / 20.0 - 0.05 <= elapsed <= span_s / 20.0 + 1.0
    finally:
        await redis_client.delete(key)

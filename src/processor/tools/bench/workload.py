"""The benchmark's input: simulator runs on the sample event, like production traffic."""

from __future__ import annotations

import asyncio
import itertools
import time

import msgspec
from redis.asyncio import Redis

from processor.core.timeparse import format_ms, parse_time_ms
from processor.tools.simulator.event import load_event
from processor.tools.simulator.generator import Entry, GeneratorConfig, Simulation
from processor.tools.simulator.schedule import ExtrasStart

Fields = dict[bytes, bytes]


def bench_entries(*, devices: int, count: int, seed: int) -> list[Fields]:
    """The first `count` entries of a 1 Hz run with `devices` cars, in arrival order."""
    simulation = Simulation(load_event(), GeneratorConfig(devices=devices, seed=seed))
    return [entry.fields() for entry in itertools.islice(simulation.entries(), count)]


async def produce_realtime(
    redis_url: str,
    stream: str,
    *,
    rate: int,
    seconds: float,
    seed: int,
    shift_ms: int | None = None,
    extras_start: ExtrasStart = "part_way",
) -> int:
    """`rate` devices at 1 Hz for `seconds`, each entry XADDed at its received_at.

    The run is shifted so received_at is the wall clock (by `shift_ms`, if given: a
    caller that moved the event's stages by as much, so the cars drive open stages), and
    entries are sent by the wall clock (not paced relative to the first one), so
    received_at → commit measures the processor and nothing else. All cars start at
    once: a steady `rate` per second for about a minute, then less as cars finish.
    """
    event = load_event()
    generated = Simulation(
        event,
        GeneratorConfig(devices=rate, seed=seed, start_interval_s=0.0, extras_start=extras_start),
    ).entries()
    first = next(generated)
    entries = itertools.chain([first], generated)
    client = Redis.from_url(redis_url)
    sent = 0
    try:
        # Align the simulated clock with the wall clock once generation is ready.
        shift = shift_ms
        if shift is None:
            shift = time.time_ns() // 1_000_000 + 200 - first.received_ms
        end_ms = first.received_ms + int(seconds * 1000)
        pending: list[Entry] = []
        for entry in entries:
            if entry.received_ms >= end_ms:
                break
            due_ms = entry.received_ms + shift
            delay = due_ms / 1000 - time.time()
            if delay > 0.005 and pending:
                sent += await _send(client, stream, pending, shift)
                delay = due_ms / 1000 - time.time()
            if delay > 0.005:
                await asyncio.sleep(delay)
            pending.append(entry)
        sent += await _send(client, stream, pending, shift)
    finally:
        await client.aclose()
    return sent


async def _send(client: Redis, stream: str, entries: list[Entry], shift: int) -> int:
    """XADD with payload times moved by `shift`, i.e. onto the wall clock."""
    pipe = client.pipeline(transaction=False)
    for entry in entries:
        payload = msgspec.json.decode(entry.payload)
        for key in ("timestamp", "received_at"):
            value = payload.get(key)
            if isinstance(value, str):
                payload[key] = format_ms(parse_time_ms(value) + shift)
        pipe.xadd(stream, {b"v": b"1", b"payload": msgspec.json.encode(payload)})
    count = len(entries)
    if count:
        await pipe.execute()
    entries.clear()
    return count

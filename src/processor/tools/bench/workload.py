"""The benchmark's input: simulator runs on the sample event, like production traffic."""

from __future__ import annotations

import itertools
import time

from processor.tools.simulator.event import load_event
from processor.tools.simulator.generator import GeneratorConfig, Simulation
from processor.tools.simulator.sink import Pace, write_entries

Fields = dict[bytes, bytes]


def bench_entries(*, devices: int, count: int, seed: int) -> list[Fields]:
    """The first `count` entries of a 1 Hz run with `devices` cars, in arrival order."""
    simulation = Simulation(load_event(), GeneratorConfig(devices=devices, seed=seed))
    return [entry.fields() for entry in itertools.islice(simulation.entries(), count)]


async def produce_realtime(
    redis_url: str, stream: str, *, rate: int, seconds: float, seed: int
) -> int:
    """`rate` devices at 1 Hz, in real time, with received_at aligned to the wall clock."""
    event = load_event()
    probe = Simulation(event, GeneratorConfig(devices=rate, seed=seed))
    first = next(iter(probe.entries()))
    shift = time.time_ns() // 1_000_000 + 300 - first.received_ms
    simulation = Simulation(event, GeneratorConfig(devices=rate, seed=seed, time_shift_ms=shift))
    end_ms = first.received_ms + shift + int(seconds * 1000)
    entries = itertools.takewhile(lambda e: e.received_ms < end_ms, simulation.entries())
    result = await write_entries(entries, url=redis_url, stream=stream, pace=Pace(1.0))
    return result.written

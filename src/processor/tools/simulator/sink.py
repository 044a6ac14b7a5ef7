"""Writes entries to a Redis stream with XADD, pipelined, at a chosen pace.

The generator is consumed lazily, so memory holds at most one pipeline batch. Paced
modes map the entries' received_at timeline onto the wall clock (×factor) anchored at
the first entry, and flush before every sleep so no entry waits behind a batch.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from processor.tools.simulator.generator import Entry

EntryIds = Literal["auto", "received"]
_EARLY_S = 0.02  # an entry due within this much is sent now, with the batch


@dataclass(frozen=True, slots=True)
class Pace:
    """None: as fast as possible; otherwise simulated seconds per wall second."""

    factor: float | None

    @classmethod
    def parse(cls, text: str) -> Pace:
        """`max`, `realtime`, or an acceleration: `x10`, `10x`, `10`."""
        word = text.strip().lower()
        if word == "max":
            return cls(None)
        if word in ("realtime", "real-time", "x1", "1x", "1"):
            return cls(1.0)
        match = re.fullmatch(r"x?([0-9]*\.?[0-9]+)x?", word)
        if match is None or float(match.group(1)) <= 0.0:
            raise ValueError(f"speed must be realtime, max or xN (N > 0), not {text!r}")
        return cls(float(match.group(1)))


@dataclass(slots=True)
class SinkResult:
    written: int = 0
    batches: int = 0
    wall_s: float = 0.0


async def write_entries(
    entries: Iterable[Entry],
    *,
    url: str,
    stream: str,
    pace: Pace = Pace(None),
    batch_size: int = 500,
    entry_ids: EntryIds = "auto",
    on_entry: Callable[[Entry], None] | None = None,
) -> SinkResult:
    """XADD every entry to `stream`; `entry_ids="received"` uses `<received_at ms>-*`
    IDs (Redis ≥ 7; the stream must not already hold later IDs)."""
    if batch_size < 1:
        raise ValueError("batch_size must be ≥ 1")
    loop = asyncio.get_running_loop()
    client = Redis.from_url(url)
    result = SinkResult()
    started = loop.time()
    try:
        pipe = client.pipeline(transaction=False)
        queued = 0
        anchor: tuple[float, int] | None = None
        for entry in entries:
            if pace.factor is not None:
                if anchor is None:
                    anchor = (loop.time(), entry.received_ms)
                due = anchor[0] + (entry.received_ms - anchor[1]) / 1000.0 / pace.factor
                delay = due - loop.time()
                if delay > _EARLY_S:
                    queued = await _flush(pipe, queued, result)
                    await asyncio.sleep(delay)
            entry_id = f"{entry.received_ms}-*" if entry_ids == "received" else "*"
            pipe.xadd(stream, entry.fields(), id=entry_id)  # type: ignore[arg-type]
            queued += 1
            if on_entry is not None:
                on_entry(entry)
            if queued >= batch_size:
                queued = await _flush(pipe, queued, result)
        await _flush(pipe, queued, result)
    finally:
        await client.aclose()
        result.wall_s = loop.time() - started
    return result


async def _flush(pipe: Pipeline, queued: int, result: SinkResult) -> int:
    """Send the queued XADDs; returns the new queue length (0)."""
    if queued:
        await pipe.execute()
        result.written += queued
        result.batches += 1
    return 0

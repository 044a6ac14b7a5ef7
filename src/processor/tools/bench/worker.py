"""The processor under measurement, in a process of its own (so CPU and RSS are its own).

Settings come from the environment like `processor run`. Prints one JSON line.
With `--latency`, runs until SIGTERM and records received_at → commit for every row.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import Sequence

from processor.app import open_pipeline
from processor.core.position import Position
from processor.core.settings import load_settings
from processor.observability.metrics import Metrics
from processor.storage.writer import PositionWriter, WriteResult
from processor.tools.bench.rss import peak_rss_mb


class LatencyRecorder:
    """Wraps the writer's `write` to note commit time minus received_at for every row."""

    def __init__(self, writer: PositionWriter) -> None:
        self.samples: list[float] = []
        self._write = writer.write
        writer.write = self.write  # type: ignore[method-assign]

    async def write(self, positions: Sequence[Position]) -> WriteResult:
        result = await self._write(positions)
        now_ms = time.time() * 1000
        self.samples.extend((now_ms - p.received_at_ms) / 1000 for p in positions)
        return result


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def main(latency: bool) -> dict[str, float]:
    settings = load_settings()
    metrics = Metrics()
    async with open_pipeline(settings, metrics) as pipeline:
        recorder = LatencyRecorder(pipeline.writer) if latency else None
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, pipeline.stop)
        cpu0 = time.process_time()
        started = time.time()
        clean = await pipeline.run(until_idle=not latency)
        cpu = time.process_time() - cpu0
    last_commit = metrics.registry.get_sample_value("processor_last_commit_timestamp_seconds")
    out = {
        "clean": float(clean),
        "wall_s": (last_commit - started) if last_commit else float("nan"),
        "cpu_s": cpu,
        "max_rss_mb": peak_rss_mb(),
        "inserted": metrics.registry.get_sample_value("processor_positions_inserted_total") or 0.0,
    }
    if recorder is not None:
        out.update(
            samples=len(recorder.samples),
            p50_ms=_percentile(recorder.samples, 0.50) * 1000,
            p95_ms=_percentile(recorder.samples, 0.95) * 1000,
            p99_ms=_percentile(recorder.samples, 0.99) * 1000,
            max_ms=max(recorder.samples, default=float("nan")) * 1000,
        )
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main("--latency" in sys.argv[1:]))))

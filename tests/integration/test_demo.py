"""`processor demo` end to end: simulator and processor in one process, piped output."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re

import asyncpg
import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Histogram
from rich.console import Console

from processor.core.settings import Settings
from processor.tools.demo import (
    DemoOptions,
    RollingRate,
    _stop_feeder,
    build_simulation,
    demo_settings,
    histogram_quantile,
    run_demo,
)
from processor.tools.dlq import reasons

pytestmark = pytest.mark.integration


async def test_demo_stores_positions_dead_letters_and_prints_a_summary(
    settings: Settings,
    stream_prefix: str,
    redis_client: aioredis.Redis,
    db: asyncpg.Connection,
) -> None:
    demo = demo_settings(settings, f"{stream_prefix}:demo")
    out = io.StringIO()
    options = DemoOptions(
        devices=3, speed="x50", duration_s=5.0, start_interval_s=5.0, malformed_rate=0.1
    )
    device_ids = [plan.device_id for plan in build_simulation(options).plans]
    try:
        report = await asyncio.wait_for(run_demo(demo, options, Console(file=out, width=120)), 60)

        f = report.figures
        stored = await db.fetchval(
            "SELECT count(*) FROM telemetry.positions WHERE device_id = ANY($1::text[])",
            report.device_ids,
        )
        assert stored > 0
        assert report.device_ids == device_ids
        assert stored == report.stored_rows == f.inserted
        by_reason = await reasons(redis_client, demo.dlq_stream)
        assert by_reason
        assert by_reason == report.dead_letters_by_reason
        assert sum(by_reason.values()) == f.dead_letters == sum(f.rejected.values())
        # Stopped cleanly, and every entry the simulator wrote is accounted for.
        assert report.clean
        assert f.written == f.entries_read == f.inserted + f.duplicates + f.dead_letters
        assert (f.lag, f.pending, f.in_flight) == (0, 0, 0)
        assert f.devices == 3

        text = out.getvalue()
        assert "\x1b[" not in text  # not a terminal: no Live view, no escape codes
        assert re.search(r"\[\s*\d+\.\d s\] read \d+", text)  # plain progress lines
        assert "demo summary: duration reached after" in text
        assert re.search(rf"rows of the demo's devices \(all runs\)\s*│\s*{stored:,}\s*│", text)
        assert "query the stored positions:" in text
        assert "psql -h 127.0.0.1" in text
        assert report.device_ids[0] in text  # the sample query's result table
        assert f"DEL {demo.stream} {demo.dlq_stream} {demo.notice_stream}" in text
    finally:
        await db.execute(
            "DELETE FROM telemetry.positions WHERE device_id = ANY($1::text[])", device_ids
        )


async def test_the_simulator_is_stopped_even_when_it_loses_the_first_cancel() -> None:
    """On Python 3.11 a cancel that lands as a pipelined XADD completes is lost (see
    `cancel_and_wait`); the simulator then sleeps until its next entry is due, which
    under load made the demo outlive its duration by minutes."""
    lost = asyncio.Event()

    async def simulator() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # the lost cancellation
            await asyncio.sleep(600)
        lost.set()
        await asyncio.sleep(600)  # the next entry is due in ten minutes

    feeder = asyncio.create_task(simulator())
    await asyncio.sleep(0)
    assert await asyncio.wait_for(_stop_feeder(feeder), 60) is None
    assert lost.is_set()
    assert feeder.cancelled()


def test_demo_settings_keep_the_demo_apart_from_the_real_stream(settings: Settings) -> None:
    demo = demo_settings(settings, "demo:positions")
    assert (demo.stream, demo.dlq_stream, demo.notice_stream) == (
        "demo:positions",
        "demo:positions:dlq",
        "demo:positions:committed",
    )
    assert demo.database_url == settings.database_url
    assert not demo.http_enabled


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    registry = CollectorRegistry()
    histogram = Histogram("h_seconds", "test", buckets=(0.1, 0.2, 0.4), registry=registry)
    for value in (0.05, 0.15, 0.15, 0.3):
        histogram.observe(value)
    # rank 2 of 4 falls in (0.1, 0.2] holding ranks 2..3: halfway through the bucket.
    assert histogram_quantile(registry, "h_seconds", 0.5) == pytest.approx(0.15)
    assert histogram_quantile(registry, "h_seconds", 1.0) == pytest.approx(0.4)
    histogram.observe(9.0)  # beyond the last finite bucket: its bound is the estimate
    assert histogram_quantile(registry, "h_seconds", 0.99) == pytest.approx(0.4)
    assert histogram_quantile(CollectorRegistry(), "h_seconds", 0.5) is None


def test_rolling_rate_forgets_old_samples() -> None:
    rate = RollingRate(window_s=5.0)
    assert rate.update(0.0, 0) == 0.0
    assert rate.update(1.0, 100) == pytest.approx(100.0)
    for second in range(2, 11):
        rate.update(float(second), 100)
    assert rate.update(11.0, 100) == pytest.approx(0.0)

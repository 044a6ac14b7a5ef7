"""A later window handled before an earlier one gives the same rows as in order.

Two `processor domain` instances, or two batches the core commits out of order
(`PROCESSOR_BATCHES_IN_FLIGHT` > 1), can have a device's later notice handled before an
earlier one. The in-order fast path must not take the earlier window for "the newest":
when it did, the segment between the two windows was timed by neither (a gate crossing
lost) and a speed zone measured before its inner fixes were stored kept its wrong
measurement (a penalty lost). Here the split is made on purpose, at every kind of place
that matters on one car's stage — just before a gate crossing, inside a speed zone, at
a zone's exit — and the later half is stored and handled first.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from processor.core.settings import Settings
from processor.tools.simulator import ground_truth
from processor.tools.simulator.generator import Entry
from processor.tools.simulator.scenarios import Scenario, Speeding
from tests.integration.test_race_scenarios import EVENT_END_MS, feed, race_db, simulate

pytestmark = pytest.mark.integration

__all__ = ["race_db"]  # the fixture, used by name
TABLES = ("timing_records", "penalties", "stage_results", "alerts")
CAR = 1
GAP_MS = 5_000  # the short window handled last


async def outputs(db: asyncpg.Connection) -> dict[str, list[str]]:
    found = {}
    for table in TABLES:
        rows = await db.fetch(
            f"SELECT (to_jsonb(t) - 'id' - 'updated_at' - 'created_at')::text AS row"
            f" FROM public.{table} t ORDER BY key"
        )
        found[table] = [r["row"] for r in rows]
    return found


async def clear(db: asyncpg.Connection) -> None:
    await db.execute(
        "TRUNCATE public.timing_records, public.stage_results, public.penalties, public.alerts,"
        " telemetry.outbox, telemetry.position_attributes, telemetry.domain_outputs,"
        " telemetry.domain_progress, telemetry.positions"
    )


def split_points(entries: list[Entry], truth: list[ground_truth.TruthRecord]) -> dict[str, int]:
    """Places to cut the car's records: just before a gate crossing (the segment over the
    gate between the two halves), in the middle of the speeding passage, at its exit."""
    device = entries[0].device_id
    mine = [t for t in truth if t.device_id == device and t.stage == 1]
    gate = next(t for t in mine if t.kind == "split_line")
    zone_in = next(t for t in mine if t.kind == "speed_zone" and t.transition == "entry")
    zone_out = next(
        t
        for t in mine
        if t.kind == "speed_zone" and t.transition == "exit" and t.geofence == zone_in.geofence
    )
    return {
        "before_a_gate_crossing": gate.crossed_at_ms,
        "inside_the_speed_zone": (zone_in.crossed_at_ms + zone_out.crossed_at_ms) // 2,
        "at_the_zone_exit": zone_out.crossed_at_ms,
    }


@pytest.mark.timeout(600)
async def test_a_later_window_handled_first_changes_nothing(
    settings: Settings, redis_client: aioredis.Redis, race_db: asyncpg.Connection
) -> None:
    sim = simulate(
        Scenario(entry=CAR, stage=1, action=Speeding(over_kmh=15, duration_s=10, tolerance_kmh=3))
    )
    everything = list(sim.entries())
    device = next(d.imei for d in sim.event.devices if d.id == CAR)
    car = [e for e in everything if e.device_id == device]
    assert car
    truth = ground_truth.compute(sim)

    await feed(settings, redis_client, car, EVENT_END_MS)
    reference = await outputs(race_db)
    assert reference["penalties"], "the scripted speeding left no penalty"
    assert len(reference["timing_records"]) > 5

    compared: list[str] = []
    for name, cut in split_points(car, truth).items():
        await clear(race_db)
        # The track up to a few seconds before the cut, in order; then what follows the
        # cut; then the few seconds in between: a short window, right behind records
        # already handled, that looks like the newest to anything reading up to its end.
        first = [e for e in car if e.ts_ms < cut - GAP_MS]
        middle = [e for e in car if cut - GAP_MS <= e.ts_ms < cut]
        last = [e for e in car if e.ts_ms >= cut]
        assert middle
        for part in (first, last, middle):
            await feed(settings, redis_client, part, EVENT_END_MS)
        found: dict[str, Any] = await outputs(race_db)
        for table in TABLES:
            assert found[table] == reference[table], f"{name}: {table} differs"
        compared.append(name)
    assert len(compared) == 3

"""`processor backfill attributes` killed with SIGKILL mid-way, then run again: it
resumes from its checkpoint and ends exactly where an uninterrupted run ends (issue 17).

The killed run is a real `processor` child (rate-limited so the kill lands mid-way); the
reference is the same data backfilled in one go. `KILL_LOOP=N` repeats it N times.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import asyncpg
import pytest

from processor.core.settings import Settings
from processor.domain_runner.backfill import Backfill, Scope
from tests.entries import BASE_MS
from tests.faults.harness import settings_env
from tests.integration.attribute_scenario import (
    IBUTTON,
    RIGHT,
    WRONG,
    add_devices,
    attributes,
    scratch_databases,
    set_mappings,
)

pytestmark = pytest.mark.faults

DEVICES = [f"BK{n:02d}" for n in range(6)]
SECONDS = 2000  # 12 000 positions
KILL_RUNS = int(os.environ.get("KILL_LOOP", "1"))


async def _history(url: str) -> asyncpg.Connection:
    """12 000 positions whose attributes were written with the wrong mapping, which has
    since been corrected: the backfill rewrites every row."""
    conn = await asyncpg.connect(url)
    await add_devices(conn, DEVICES)
    await set_mappings(conn, WRONG)
    await conn.execute(
        "INSERT INTO telemetry.positions (device_id, ts, received_at, latitude, longitude,"
        " fix_valid, io, stream_id)"
        " SELECT d, to_timestamp(($2::bigint + s * 1000) / 1000.0), now(), 54.6, 25.2, true,"
        " jsonb_build_object('17', 65536 - s % 30000, '239', s % 2, '78', $3::bigint + s,"
        " '66', 12000 + s), '0-1'"
        " FROM unnest($1::text[]) d, generate_series(1, $4) s",
        DEVICES,
        BASE_MS,
        IBUTTON,
        SECONDS,
    )
    await Backfill(conn, Scope(), rate=0).run()
    await conn.execute("DELETE FROM telemetry.backfill_checkpoints")  # as if written live
    await set_mappings(conn, RIGHT)
    return conn


async def _scanned(conn: asyncpg.Connection) -> int:
    return int(
        await conn.fetchval("SELECT coalesce(max(scanned), 0) FROM telemetry.backfill_checkpoints")
    )


async def _child(settings: Settings, url: str, *args: str) -> asyncio.subprocess.Process:
    env = settings_env(settings, database_url=url, log_format="json", log_level="WARNING")
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "processor",
        "backfill",
        "attributes",
        "--settle-s",
        "0",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


@pytest.mark.parametrize("run", range(KILL_RUNS))
async def test_kill_9_mid_backfill_then_resume_ends_as_one_uninterrupted_run(
    settings: Settings, run: int
) -> None:
    total = len(DEVICES) * SECONDS
    async with scratch_databases(2) as (killed_url, reference_url):
        killed, reference = await _history(killed_url), await _history(reference_url)
        try:
            child = await _child(settings, killed_url, "--rate", "3000", "--batch", "100")
            try:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 60
                target = total // 3 + run * 700 % (total // 3)  # a different point each run
                while await _scanned(killed) < target and loop.time() < deadline:
                    if child.returncode is not None:
                        break
                    await asyncio.sleep(0.02)
                child.send_signal(signal.SIGKILL)
                await asyncio.wait_for(child.wait(), 30)
            finally:
                if child.returncode is None:
                    child.kill()
            assert child.returncode == -signal.SIGKILL
            at_kill = await killed.fetchrow("SELECT * FROM telemetry.backfill_checkpoints")
            assert at_kill is not None
            assert at_kill["finished_at"] is None
            assert 0 < at_kill["scanned"] < total
            # Half rewritten: some rows with the corrected mapping, some still old.
            versions = await killed.fetchval(
                "SELECT count(DISTINCT mapping_version) FROM telemetry.position_attributes"
            )
            assert versions == 2

            again = await _child(settings, killed_url, "--rate", "0")
            out, _ = await asyncio.wait_for(again.communicate(), 120)
            text = out.decode()
            assert again.returncode == 0, text
            assert "resumed after" in text, text

            await Backfill(reference, Scope(), rate=0).run()
            expected = await attributes(reference)
            assert len(expected) == total
            assert await attributes(killed) == expected
            done = await killed.fetchrow("SELECT * FROM telemetry.backfill_checkpoints")
            assert done is not None
            assert done["finished_at"] is not None
            assert done["scanned"] == total  # every position once, across both runs
        finally:
            await killed.close()
            await reference.close()

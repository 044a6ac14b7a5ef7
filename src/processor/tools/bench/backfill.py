"""`processor backfill bench`: the backfill's throughput, and the core's beside it.

Issue 17's targets: backfill throughput in positions/s on this machine, and the core's
throughput while a backfill runs at the default rate limit — within the benchmark's
noise. In a database and stream keys of its own, dropped afterwards:

1. history: `positions` simulator records (FMB920-like, 13 IO elements, two 64-bit)
   stored with the writer, the shipped FMB920 mappings loaded, the devices registered;
2. backfill, no rate limit, in this process: a first run (every row added), then a run
   after a mapping correction (every row rewritten), then one with nothing to change;
3. the core (`processor.tools.bench.worker`, a process of its own) draining a pre-filled
   stream of `core_entries` newer records, alone and with `processor backfill
   attributes --rate R` running beside it (a process of its own, rewriting the history
   after a mapping correction), in the order alone, beside, beside, alone, … so a
   machine that drifts during the run favours neither.

The machine is shared and noisy: the spread of the "alone" runs is the noise the
"beside" runs are judged against.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import redis.asyncio as aioredis

from processor.core.contract import decode_entry
from processor.core.position import Position
from processor.core.settings import load_settings
from processor.core.timeparse import format_ms, parse_time_ms
from processor.domain_runner.backfill import Backfill, Scope
from processor.observability.metrics import Metrics
from processor.storage.migrate import migrate
from processor.storage.pool import create_pool
from processor.storage.writer import PositionWriter
from processor.tools.bench.run import _db_url, _env, _fill, _subprocess_json
from processor.tools.bench.workload import Fields, bench_entries
from processor.tools.mappings import load_shipped

Say = Callable[[str], None]
DAY_MS = 86_400_000
FIXTURE = Path(__file__).resolve().parents[2] / "storage" / "directus_fixture.sql"


@dataclass
class BackfillBenchConfig:
    positions: int = 100_000
    devices: int = 500
    core_entries: int = 100_000
    rate: float = 2000.0
    repeats: int = 2
    seed: int = 1
    output: Path | None = None


@dataclass
class BackfillBenchResult:
    config: dict[str, Any]
    figures: dict[str, Any] = field(default_factory=dict)


def _shifted(entries: list[Fields], shift_ms: int) -> list[Fields]:
    """The same records `shift_ms` later (new keys: no duplicate of the history)."""
    out = []
    for fields in entries:
        payload = msgspec.json.decode(fields[b"payload"])
        for key in ("timestamp", "received_at"):
            value = payload.get(key)
            if isinstance(value, str):
                payload[key] = format_ms(parse_time_ms(value) + shift_ms)
        out.append({b"v": b"1", b"payload": msgspec.json.encode(payload)})
    return out


async def _toggle_mapping(conn: asyncpg.Connection, n: int) -> None:
    """A correction of the external voltage's scale: every history row changes."""
    await conn.execute(
        "UPDATE public.io_mappings SET multiplier = $1::numeric"
        " WHERE model = 'FMB920' AND io_id = 66",
        "0.001" if n % 2 == 0 else "0.01",
    )


async def run_backfill_bench(config: BackfillBenchConfig, say: Say) -> BackfillBenchResult:
    base = load_settings()
    tag = uuid.uuid4().hex[:10]
    db_name = f"processor_bench_backfill_{tag}"
    admin_url = _db_url(base.database_url.get_secret_value(), "postgres")
    url = _db_url(base.database_url.get_secret_value(), db_name)
    settings = load_settings(database_url=url, stream=f"bench:{tag}:positions", group="bench")
    result = BackfillBenchResult(config={k: str(v) for k, v in vars(config).items()})
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{db_name}"')
    redis = aioredis.Redis.from_url(settings.redis_url.get_secret_value())
    conn = await asyncpg.connect(url)
    try:
        result.figures["storage_mode"] = (await migrate(conn, settings)).mode
        await conn.execute(await asyncio.to_thread(FIXTURE.read_text))
        await load_shipped(conn, "FMB920")
        say(f"history: {config.positions} positions from {config.devices} simulated devices")
        entries = bench_entries(devices=config.devices, count=config.positions, seed=config.seed)
        history = [
            p
            for i, f in enumerate(entries)
            if isinstance(p := decode_entry(f"{1_777_629_600_000 + i}-0", f), Position)
        ]
        pool = await create_pool(settings)
        try:
            writer = PositionWriter(pool, Metrics())
            for i in range(0, len(history), 5000):
                await writer.write(history[i : i + 5000])
        finally:
            await pool.close()
        await conn.executemany(
            "INSERT INTO public.devices (imei, model) VALUES ($1, 'FMB920')",
            [(d,) for d in sorted({p.device_id for p in history})],
        )
        await conn.execute("VACUUM ANALYZE telemetry.positions")
        stored = int(await conn.fetchval("SELECT count(*) FROM telemetry.positions"))

        runs: dict[str, float] = {}
        for label, change in (("first", None), ("corrected", 1), ("unchanged", None)):
            if change is not None:
                await _toggle_mapping(conn, change)
            await conn.execute("DELETE FROM telemetry.backfill_checkpoints")
            outcome = await Backfill(conn, Scope(), rate=0, batch=base.backfill_batch).run()
            runs[label] = outcome.rate
            say(
                f"backfill ({label}): {outcome.tally.scanned} positions in"
                f" {outcome.elapsed_s:.2f} s = {outcome.rate:,.0f} positions/s"
                f" (added {outcome.tally.added}, changed {outcome.tally.updated})"
            )
        result.figures["backfill_positions_per_s"] = runs
        result.figures["history_positions"] = stored

        say(f"core: {config.core_entries} entries alone and beside a backfill at {config.rate:g}/s")
        core = bench_entries(
            devices=config.devices, count=config.core_entries, seed=config.seed + 1
        )
        env = _env(settings)
        alone: list[float] = []
        beside: list[float] = []
        backfill_rates: list[float] = []
        order = [
            kind for _ in range(config.repeats) for kind in ("alone", "beside", "beside", "alone")
        ][: 2 * config.repeats]
        for n, kind in enumerate(order):
            await redis.delete(settings.stream)
            await _fill(redis, settings.stream, _shifted(core, (n + 1) * 30 * DAY_MS))
            child = None
            if kind == "beside":
                await _toggle_mapping(conn, n)
                child = await _start_backfill(env, config.rate)
                await _until_backfill_writes(conn)
            started_scanned = await _scanned(conn)
            t0 = time.monotonic()
            figures = await asyncio.to_thread(
                _subprocess_json, [sys.executable, "-m", "processor.tools.bench.worker"], env, 900
            )
            rate = figures["inserted"] / figures["wall_s"]
            if child is not None:
                backfill_rates.append(
                    (await _scanned(conn) - started_scanned) / (time.monotonic() - t0)
                )
                child.terminate()
                await asyncio.wait_for(child.wait(), 60)
            (alone if kind == "alone" else beside).append(rate)
            say(f"core {kind}: {rate:,.0f} positions/s")
        result.figures["core_alone_positions_per_s"] = alone
        result.figures["core_beside_backfill_positions_per_s"] = beside
        result.figures["backfill_beside_core_positions_per_s"] = backfill_rates
        median_alone = statistics.median(alone)
        result.figures["core_ratio_beside_vs_alone"] = statistics.median(beside) / median_alone
        result.figures["core_alone_spread"] = (max(alone) - min(alone)) / median_alone
    finally:
        await conn.close()
        keys = [k async for k in redis.scan_iter(match=f"bench:{tag}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        await admin.close()
    if config.output is not None:
        config.output.parent.mkdir(parents=True, exist_ok=True)
        config.output.write_text(json.dumps(vars(result), indent=2, default=str))
    return result


async def _start_backfill(env: dict[str, str], rate: float) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "processor",
        "backfill",
        "attributes",
        "--rate",
        str(rate),
        "--settle-s",
        "0",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def _scanned(conn: asyncpg.Connection) -> int:
    value = await conn.fetchval(
        "SELECT coalesce(max(scanned), 0) FROM telemetry.backfill_checkpoints"
    )
    return int(value)


async def _until_backfill_writes(conn: asyncpg.Connection, timeout_s: float = 60) -> None:
    """Until the backfill child has committed a page of this run (its plan is made)."""
    before = await conn.fetchval("SELECT max(updated_at) FROM telemetry.backfill_checkpoints")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = await conn.fetchval(
            "SELECT max(updated_at) FROM telemetry.backfill_checkpoints WHERE finished_at IS NULL"
        )
        if now is not None and (before is None or now > before):
            return
        await asyncio.sleep(0.05)
    raise RuntimeError("the backfill did not start writing within a minute")

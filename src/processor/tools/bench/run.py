"""The benchmark, one command: every figure measured in the same run, ratios printed.

1. raw ceiling: binary COPY of the same rows into an empty table shaped like positions;
2. write methods: the writer's COPY-staging and unnest statements, one batch at a time;
3. naive peer: a plain redis-py + json + psycopg executemany consumer, end to end;
4. processor: `processor` draining the pre-filled stream, end to end, CPU and peak RSS;
5. latency: the simulator at a fixed rate in real time, received_at → commit percentiles;
6. domain (`bench.domain`): the core beside a failing and a working domain stage, and the
   domain stage keeping up with the simulator in real time on a 50-geofence layout;
7. engines (`bench.engines`): what the exact insert count (RETURNING) costs against the
   command tag, and with `--citus-url` the writer and the processor on a Citus cluster,
   as ratios to this run's plain figures.

Runs in a database and stream keys of its own, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis.asyncio as aioredis

from processor.core.contract import decode_entry
from processor.core.position import Position
from processor.core.settings import Settings, load_settings
from processor.observability.metrics import Metrics
from processor.storage.migrate import migrate
from processor.storage.pool import create_pool, install_codecs
from processor.storage.rows import COLUMNS, to_row
from processor.storage.writer import PositionWriter
from processor.tools.bench import engines
from processor.tools.bench.workload import bench_entries, produce_realtime
from processor.tools.simulator.schedule import ExtrasStart

Fields = dict[bytes, bytes]
Say = Callable[[str], None]


@dataclass
class BenchConfig:
    entries: int = 200_000
    devices: int = 2_000
    seed: int = 1
    latency_seconds: float = 60.0
    latency_rate: int = 2_000
    repeats: int = 2
    output: Path | None = None
    domain_seconds: float = 60.0
    domain_rate: int = 2_000
    # The domain stage as its own process (production at load) or in `run --with-domain`.
    domain_separate: bool = True
    # Where the load cars join the stages: part-way (on the road) or at the start line.
    domain_extras_start: ExtrasStart = "part_way"
    # A Citus coordinator's admin URL: the writer and the processor measured there too.
    citus_url: str | None = None


@dataclass
class BenchResult:
    config: dict[str, Any]
    figures: dict[str, dict[str, float]] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)


def _db_url(base: str, name: str) -> str:
    return urlunsplit(urlsplit(base)._replace(path=f"/{name}"))


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROCESSOR_")}
    env.update(
        PROCESSOR_DATABASE_URL=settings.database_url.get_secret_value(),
        PROCESSOR_REDIS_URL=settings.redis_url.get_secret_value(),
        PROCESSOR_STREAM=settings.stream,
        PROCESSOR_GROUP=settings.group,
        PROCESSOR_CONSUMER="bench",
        PROCESSOR_HTTP_ENABLED="false",
        PROCESSOR_LOG_FORMAT="json",
        PROCESSOR_LOG_LEVEL="WARNING",
        PROCESSOR_BLOCK_MS="200",
    )
    return env


def _subprocess_json(args: list[str], env: dict[str, str], timeout: float) -> dict[str, float]:
    done = subprocess.run(args, env=env, capture_output=True, timeout=timeout, check=False)
    lines = [ln for ln in done.stdout.decode().splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{args} failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    result: dict[str, float] = json.loads(lines[-1])
    return result


async def _fill(redis: aioredis.Redis, stream: str, entries: Iterable[Fields]) -> int:
    count = 0
    pipe = redis.pipeline(transaction=False)
    for fields in entries:
        pipe.xadd(stream, fields)  # type: ignore[arg-type]
        count += 1
        if count % 2000 == 0:
            await pipe.execute()
    await pipe.execute()
    return count


async def _truncate(conn: asyncpg.Connection) -> None:
    await conn.execute("TRUNCATE telemetry.positions")
    await conn.execute("VACUUM ANALYZE telemetry.positions")


async def _ceiling(
    conn: asyncpg.Connection,
    positions: list[Position],
    repeats: int,
    *,
    hypertable_chunks: str | None = None,
) -> float:
    """Binary COPY into an empty table shaped like positions (a hypertable with these
    chunks, when given): what the database takes with no processor in the way."""
    await install_codecs(conn)  # the same wire encoding as the writer's
    rows = [to_row(p) for p in positions]
    best = 0.0
    for _ in range(repeats):
        await conn.execute("DROP TABLE IF EXISTS bench_ceiling")
        await conn.execute("CREATE TABLE bench_ceiling (LIKE telemetry.positions INCLUDING ALL)")
        if hypertable_chunks is not None:
            await conn.execute(
                "SELECT create_hypertable('bench_ceiling', 'ts',"
                " chunk_time_interval => CAST($1::text AS interval))",
                hypertable_chunks,
            )
        started = time.perf_counter()
        await conn.copy_records_to_table("bench_ceiling", records=rows, columns=COLUMNS)
        best = max(best, len(rows) / (time.perf_counter() - started))
    await conn.execute("DROP TABLE bench_ceiling")
    return best


async def _write_method(
    settings: Settings, conn: asyncpg.Connection, positions: list[Position], method: str
) -> float:
    pool = await create_pool(settings)
    try:
        writer = PositionWriter(pool, Metrics(), method=method)  # type: ignore[arg-type]
        await _truncate(conn)
        size = settings.batch_max_rows
        started = time.perf_counter()
        for i in range(0, len(positions), size):
            await writer.write(positions[i : i + size])
        return len(positions) / (time.perf_counter() - started)
    finally:
        await pool.close()


async def run_bench(config: BenchConfig, say: Say) -> BenchResult:
    base = load_settings()
    tag = uuid.uuid4().hex[:10]
    db_name = f"processor_bench_{tag}"
    admin_url = _db_url(base.database_url.get_secret_value(), "postgres")
    url = _db_url(base.database_url.get_secret_value(), db_name)
    settings = load_settings(database_url=url, stream=f"bench:{tag}:positions", group="bench")
    result = BenchResult(config={k: str(v) for k, v in vars(config).items()})
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{db_name}"')
    redis = aioredis.Redis.from_url(settings.redis_url.get_secret_value())
    conn = await asyncpg.connect(url)
    try:
        mode = (await migrate(conn, settings)).mode
        result.config["storage_mode"] = mode
        say(f"storage: {mode}")
        say(f"generating {config.entries} entries from {config.devices} simulated devices")
        entries = bench_entries(devices=config.devices, count=config.entries, seed=config.seed)
        positions = [
            p
            for i, f in enumerate(entries)
            if isinstance(p := decode_entry(f"{1_777_629_600_000 + i}-0", f), Position)
        ]
        say(f"{len(positions)} decodable positions; raw COPY ceiling")
        plain_ceiling = await _ceiling(conn, positions, config.repeats)
        result.figures["raw_copy_ceiling"] = {"rows_per_s": plain_ceiling}
        # The processor is judged against the table it writes to: a hypertable here.
        ceiling = plain_ceiling
        if mode == "timescale":
            say("raw COPY ceiling into a hypertable")
            ceiling = await _ceiling(
                conn,
                positions,
                config.repeats,
                hypertable_chunks=settings.timescale_chunk_interval,
            )
            result.figures["raw_copy_ceiling_hypertable"] = {"rows_per_s": ceiling}
        for method in ("copy", "unnest"):
            say(f"writer method {method}")
            rates = [
                await _write_method(settings, conn, positions, method)
                for _ in range(config.repeats)
            ]
            result.figures[f"writer_{method}"] = {"rows_per_s": max(rates)}

        env = _env(settings)
        say("naive peer: filling the stream, then draining it")
        await _truncate(conn)
        await redis.delete(settings.stream)
        await _fill(redis, settings.stream, entries)
        naive = await asyncio.to_thread(
            _subprocess_json,
            [
                sys.executable,
                "-m",
                "processor.tools.bench.naive",
                url,
                settings.redis_url.get_secret_value(),
                settings.stream,
                "naive",
            ],
            env,
            900,
        )
        naive["positions_per_s"] = naive["parsed"] / naive["wall_s"]
        result.figures["naive_peer"] = naive

        say("processor: draining the same pre-filled stream")
        await _truncate(conn)

        async def drain(where: Settings) -> dict[str, float]:
            await redis.delete(where.stream)
            await _fill(redis, where.stream, entries)
            figures = await asyncio.to_thread(
                _subprocess_json,
                [sys.executable, "-m", "processor.tools.bench.worker"],
                _env(where),
                900,
            )
            figures["positions_per_s"] = figures["inserted"] / figures["wall_s"]
            return figures

        proc = await drain(settings)
        result.figures["processor"] = proc

        say("writer: exact count (RETURNING) against the command tag")
        result.figures["returning_cost"] = await engines.returning_cost(
            settings, positions, config.repeats
        )
        if config.citus_url:
            result.figures["citus"] = await engines.citus_section(
                config.citus_url, settings, positions, config.repeats, _write_method, drain, say
            )

        if config.latency_seconds > 0:
            say(f"latency: {config.latency_rate} positions/s for {config.latency_seconds:.0f} s")
            result.figures["latency"] = await _latency(settings, env, redis, config)

        result.ratios = {
            "processor_vs_raw_ceiling": proc["positions_per_s"] / ceiling,
            **(
                {"hypertable_vs_plain_ceiling": ceiling / plain_ceiling}
                if mode == "timescale"
                else {}
            ),
            "processor_vs_naive_peer": proc["positions_per_s"] / naive["positions_per_s"],
            "copy_vs_unnest": result.figures["writer_copy"]["rows_per_s"]
            / result.figures["writer_unnest"]["rows_per_s"],
            "returning_vs_command_tag": result.figures["returning_cost"]["counted_vs_tagged"],
        }
        if "citus" in result.figures:
            on_citus = result.figures["citus"]
            result.ratios["citus_writer_copy_vs_plain"] = (
                on_citus["writer_copy_rows_per_s"] / result.figures["writer_copy"]["rows_per_s"]
            )
            result.ratios["citus_processor_vs_plain"] = (
                on_citus["processor_positions_per_s"] / proc["positions_per_s"]
            )

        if config.domain_seconds > 0:
            from processor.tools.bench.domain import run_domain_bench

            domain = await run_domain_bench(
                settings,
                env,
                redis,
                conn,
                entries,
                repeats=config.repeats,
                devices=config.devices,
                rate=config.domain_rate,
                seconds=config.domain_seconds,
                seed=config.seed,
                say=say,
                separate=config.domain_separate,
                extras_start=config.domain_extras_start,
            )
            result.figures.update(domain.figures)
            result.ratios.update(domain.ratios)
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


async def _latency(
    settings: Settings, env: dict[str, str], redis: aioredis.Redis, config: BenchConfig
) -> dict[str, float]:
    stream = f"{settings.stream}:latency"
    env = dict(env, PROCESSOR_STREAM=stream, PROCESSOR_BATCH_MAX_AGE_MS="50")
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "processor.tools.bench.worker",
        "--latency",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await asyncio.sleep(1.5)  # let it connect and create the group
        sent = await produce_realtime(
            settings.redis_url.get_secret_value(),
            stream,
            rate=config.latency_rate,
            seconds=config.latency_seconds,
            seed=config.seed,
        )
        await asyncio.sleep(1.0)
        worker.terminate()
        out, err = await asyncio.wait_for(worker.communicate(), 60)
    finally:
        if worker.returncode is None:
            worker.kill()
    lines = [ln for ln in out.decode().splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"latency worker failed: {err.decode()[-2000:]}")
    figures: dict[str, float] = json.loads(lines[-1])
    figures["sent"] = sent
    return figures

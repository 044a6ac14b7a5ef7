"""Peak RSS of the processor with 100 000 devices in its state (issue 3's memory target).

Run from the repository root: `.venv/bin/python bench/memory_100k_devices.py`. Fills a
scratch stream with two records for each of 100 000 devices, drains it with the real
pipeline in a process of its own (`processor.tools.bench.worker`) and prints its peak RSS.
Uses the database of PROCESSOR_DATABASE_URL (default: the local `processor` database):
its positions of the synthetic devices `35000…` are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.entries import BASE_MS, entry

from processor.core.settings import load_settings

DEVICES = 100_000


async def main() -> None:
    settings = load_settings()
    stream = f"bench:memory:{uuid.uuid4().hex[:8]}"
    redis = aioredis.Redis.from_url(settings.redis_url.get_secret_value())
    try:
        pipe = redis.pipeline(transaction=False)
        for second in range(2):
            for device in range(DEVICES):
                pipe.xadd(stream, entry(f"35{device:013d}", BASE_MS + second * 1000))  # type: ignore[arg-type]
                if device % 5000 == 4999:
                    await pipe.execute()
        await pipe.execute()
        env = dict(
            os.environ,
            PROCESSOR_STREAM=stream,
            PROCESSOR_HTTP_ENABLED="false",
            PROCESSOR_LOG_LEVEL="WARNING",
            PROCESSOR_CONSUMER="memory-bench",
        )
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "processor.tools.bench.worker"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        print(done.stdout.strip().splitlines()[-1])
    finally:
        await redis.delete(stream, f"{stream}:dlq", f"{stream}:committed")
        await redis.aclose()
        conn = await asyncpg.connect(settings.database_url.get_secret_value())
        try:
            await conn.execute(
                "DELETE FROM telemetry.positions"
                " WHERE device_id LIKE '35000%' AND ts < $1::text::timestamptz",
                "2026-05-01T10:00:05Z",
            )
        finally:
            await conn.close()


if __name__ == "__main__":
    asyncio.run(main())

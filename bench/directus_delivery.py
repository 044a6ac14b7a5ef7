"""Delivery to Directus, measured: commit → WebSocket subscriber latency at the sample
event's live rate, and the outbox and the processor's memory through a Directus outage at
2 000 positions/s (issue 14's targets).

Run from the repository root (Node.js needed: a real Directus 10.13 is started on a scratch
database, as the tests do):

    .venv/bin/python bench/directus_delivery.py                    # both, ~15 minutes
    .venv/bin/python bench/directus_delivery.py --outage-s 60      # a shorter outage

1. Live: the sample event's cars (one device per entry, 1 Hz, all started at once on open
   stages) in real time for `--live-s` into `processor run --with-domain`, dispatching; a
   race-control WebSocket subscriber records when each `processor_events` item arrives.
   Latency = arrival − the time its change was written (the outbox row's `created_at`).
2. Outage: `--rate` devices at 1 Hz on the 50-geofences-per-stage layout (the domain
   benchmark's), Directus stopped after `--lead-s` for `--outage-s`, then started again.
   Sampled every 5 s: undelivered outbox events (and the most for one row), the
   processor's RSS; afterwards the time to drain and the final check that every row's
   last delivered event is its state.
Prints one table and writes the figures as JSON to bench/results/directus-delivery.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.faults.harness import ProcessorProcess  # noqa: E402
from tests.integration.directus_server import DirectusServer, running_directus  # noqa: E402
from tests.integration.directus_subscriber import Subscriber  # noqa: E402
from tests.integration.outbox_checks import OUTPUT_TABLES  # noqa: E402

from processor.core.settings import load_settings  # noqa: E402
from processor.directus.access import ROLES_BY_KEY  # noqa: E402
from processor.storage.migrate import migrate  # noqa: E402
from processor.tools.bench.domain import bench_layout  # noqa: E402
from processor.tools.bench.workload import produce_realtime  # noqa: E402
from processor.tools.event_loader import load_event_rows, read_event_file  # noqa: E402
from processor.tools.simulator.event import load_event  # noqa: E402

TOKEN = "bench-dispatcher-" + os.urandom(8).hex()
LOGIN = ("bench.rc@example.com", "bench-" + os.urandom(8).hex())
FEED_LEAD_S = 5.0


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


@contextlib.contextmanager
def directus_server() -> Iterator[DirectusServer]:
    env = {
        "WEBSOCKETS_ENABLED": "true",
        "CACHE_ENABLED": "true",
        "CACHE_STORE": "memory",
        "CACHE_AUTO_PURGE": "true",
        "DIRECTUS_KEY": os.urandom(16).hex(),
        "DIRECTUS_SECRET": os.urandom(32).hex(),
    }
    with running_directus(Path(tempfile.mkdtemp(prefix="bench-directus-")), env=env) as server:
        yield server


async def prepare(server: DirectusServer, layout: dict[str, Any]) -> asyncpg.Connection:
    """Migrate the Directus database, load `layout`, shift its stages to open now, apply
    the roles (the dispatcher's token), and return a connection."""
    import subprocess

    settings = load_settings(database_url=server.database_url)
    conn = await asyncpg.connect(server.database_url)
    await migrate(conn, settings)
    await conn.execute(
        "TRUNCATE public.timing_records, public.stage_results, public.penalties, public.alerts,"
        " public.entries, public.geofences, public.stages, public.devices, public.events CASCADE"
    )
    await conn.execute(
        "TRUNCATE telemetry.outbox, telemetry.domain_outputs, telemetry.domain_progress,"
        " telemetry.positions, telemetry.position_attributes"
    )
    await load_event_rows(conn, layout)
    shift_ms = int(time.time() * 1000 + FEED_LEAD_S * 1000) - min(
        s.opens_at_ms for s in load_event().stages
    )
    await conn.execute(
        "UPDATE public.stages SET opens_at = opens_at + make_interval(secs => $1 / 1000.0),"
        " closes_at = closes_at + make_interval(secs => $1 / 1000.0)",
        shift_ms,
    )
    env = {
        **os.environ,
        "PROCESSOR_DIRECTUS_ADMIN_TOKEN": server.admin_token,
        "PROCESSOR_DIRECTUS_TOKEN": TOKEN,
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "processor", "directus", "apply", "--url", server.base_url],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"processor directus apply failed:\n{done.stdout}{done.stderr}")
    return conn


def processor(server: DirectusServer, stream: str) -> ProcessorProcess:
    settings = load_settings(database_url=server.database_url, stream=stream)
    return ProcessorProcess(
        settings.model_copy(update={"database_url": SecretStr(server.database_url)}),
        "--with-domain",
        consumer="bench-dispatch",
        directus_url=server.base_url,
        directus_token=TOKEN,
        http_enabled="true",
        http_port="0",
        log_format="json",
    ).start()


async def undelivered(conn: asyncpg.Connection) -> tuple[int, int]:
    row = await conn.fetchrow(
        "SELECT count(*) AS n, coalesce(max(per_row), 0) AS per_row FROM ("
        " SELECT count(*) AS per_row FROM telemetry.outbox WHERE delivered_at IS NULL"
        " GROUP BY collection, row_key) x"
    )
    assert row is not None
    n = await conn.fetchval("SELECT count(*) FROM telemetry.outbox WHERE delivered_at IS NULL")
    return int(n), int(row["per_row"])


async def last_state_matches(conn: asyncpg.Connection, subscriber: Subscriber) -> tuple[int, int]:
    """(rows whose last delivered event is their state, rows that differ)."""
    last: dict[tuple[str, str], dict[str, Any]] = {}
    for i in sorted(subscriber.items):
        p = subscriber.items[i]["payload"]
        last[(p["collection"], p["key"])] = p
    good = bad = 0
    for table in OUTPUT_TABLES:
        for r in await conn.fetch(
            f"SELECT key, to_jsonb(t)::text AS row FROM public.{table} t WHERE source = 'auto'"
        ):
            p = last.get((table, r["key"]))
            if p is not None and p.get("data") == json.loads(r["row"]):
                good += 1
            else:
                bad += 1
    return good, bad


async def live(seconds: float) -> dict[str, Any]:
    with directus_server() as server:
        doc = read_event_file()
        conn = await prepare(server, doc)
        server.create_user(ROLES_BY_KEY["race_control"].id, email=LOGIN[0], password=LOGIN[1])
        subscriber = Subscriber(server.base_url, server.login(*LOGIN))
        listening = asyncio.create_task(subscriber.run())
        stream = f"bench:dispatch:{os.urandom(4).hex()}"
        proc = processor(server, stream)
        settings = load_settings()
        try:
            sent = await produce_realtime(
                settings.redis_url.get_secret_value(),
                stream,
                rate=len(doc["entries"]),
                seconds=seconds,
                seed=11,
            )
            for _ in range(240):  # up to 2 minutes for the last changes to be delivered
                if not (await undelivered(conn))[0]:
                    break
                await asyncio.sleep(0.5)
            await asyncio.sleep(3)
            ws = [i for i in subscriber.items if subscriber.via_ws.get(i)]
            lat = [subscriber.received_at[i] - _ts(subscriber.items[i]["created_at"]) for i in ws]
            good, bad = await last_state_matches(conn, subscriber)
            acked = [
                float(r["s"])
                for r in await conn.fetch(
                    "SELECT extract(epoch FROM delivered_at - created_at) AS s"
                    " FROM telemetry.outbox WHERE delivered_at IS NOT NULL"
                )
            ]
            return {
                "positions_sent": sent,
                "seconds": seconds,
                "events": len(subscriber.items),
                "by_websocket": len(ws),
                "latency_p50_s": statistics.median(lat) if lat else None,
                "latency_p99_s": quantile(lat, 0.99),
                "latency_max_s": max(lat, default=0.0),
                # The part up to Directus acknowledging the item (the dispatcher's side).
                "acked_p50_s": statistics.median(acked) if acked else None,
                "acked_p99_s": quantile(acked, 0.99),
                "rows_last_event_equal": good,
                "rows_last_event_differs": bad,
            }
        finally:
            proc.terminate()
            proc.close()
            listening.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listening
            await conn.close()
            await _drop_stream(stream)


async def outage(rate: int, lead_s: float, outage_s: float, tail_s: float) -> dict[str, Any]:
    with directus_server() as server:
        layout = bench_layout(rate)
        conn = await prepare(server, layout)
        stream = f"bench:dispatch:{os.urandom(4).hex()}"
        proc = processor(server, stream)
        settings = load_settings()
        samples: list[dict[str, float]] = []
        feed = asyncio.create_task(
            _feed_for(
                settings.redis_url.get_secret_value(), stream, rate, lead_s + outage_s + tail_s
            )
        )
        started = time.monotonic()
        down_at = up_at = drained_at = None
        try:
            while True:
                now = time.monotonic() - started
                if down_at is None and now >= lead_s:
                    await asyncio.to_thread(server.stop)
                    down_at = time.monotonic() - started
                if up_at is None and down_at is not None and now >= lead_s + outage_s:
                    await asyncio.to_thread(server.start)
                    up_at = time.monotonic() - started
                n, per_row = await undelivered(conn)
                stored = await conn.fetchval("SELECT count(*) FROM telemetry.positions")
                samples.append(
                    {
                        "t": now,
                        "undelivered": n,
                        "per_row": per_row,
                        "rss_mb": proc.rss_kib() / 1024,
                        "stored": stored,
                    }
                )
                if up_at is not None and n == 0 and drained_at is None:
                    drained_at = time.monotonic() - started
                if drained_at is not None and feed.done():
                    break
                if now > lead_s + outage_s + tail_s + 600:
                    break
                await asyncio.sleep(5)
            sent = await feed
            during = [
                s for s in samples if down_at is not None and down_at <= s["t"] <= (up_at or 1e9)
            ]
            changed_rows = await conn.fetchval(
                "SELECT count(DISTINCT (collection, row_key)) FROM telemetry.outbox"
            )
            return {
                "rate": rate,
                "positions_sent": sent,
                "outage_s": outage_s,
                "undelivered_max": max((s["undelivered"] for s in during), default=0),
                "undelivered_per_row_max": max((s["per_row"] for s in during), default=0),
                "rows_changed": changed_rows,
                "rss_mb_max": max((s["rss_mb"] for s in samples), default=0.0),
                "rss_mb_before_outage": max(
                    (s["rss_mb"] for s in samples if s["t"] < (down_at or 0)), default=0.0
                ),
                "drain_s": None if drained_at is None or up_at is None else drained_at - up_at,
                "stored_per_s": (samples[-1]["stored"] / samples[-1]["t"]) if samples else 0,
            }
        finally:
            feed.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await feed
            proc.terminate()
            proc.close()
            await conn.close()
            await _drop_stream(stream)


async def _feed_for(redis_url: str, stream: str, rate: int, seconds: float) -> int:
    """`rate` devices at 1 Hz for `seconds`: the simulator's cars run their stages in a
    couple of minutes, so the feed is restarted (a new seed, the wall clock's times) until
    the time is up, keeping the rate steady through the whole outage."""
    sent, seed, end = 0, 13, time.monotonic() + seconds
    while (left := end - time.monotonic()) > 1:
        sent += await produce_realtime(
            redis_url,
            stream,
            rate=rate,
            seconds=min(120.0, left),
            seed=seed,
            extras_start="start_line",
        )
        seed += 1
    return sent


async def _drop_stream(stream: str) -> None:
    client = aioredis.Redis.from_url(load_settings().redis_url.get_secret_value())
    try:
        keys = [k async for k in client.scan_iter(match=f"{stream}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def _ts(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--live-s", type=float, default=180.0)
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--lead-s", type=float, default=30.0)
    parser.add_argument("--outage-s", type=float, default=600.0)
    parser.add_argument("--tail-s", type=float, default=30.0)
    parser.add_argument("--skip-live", action="store_true")
    parser.add_argument("--skip-outage", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    if not args.skip_live:
        results["live"] = await live(args.live_s)
        print("live:", json.dumps(results["live"], indent=1), flush=True)
    if not args.skip_outage:
        results["outage"] = await outage(args.rate, args.lead_s, args.outage_s, args.tail_s)
        print("outage:", json.dumps(results["outage"], indent=1), flush=True)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "directus-delivery.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    asyncio.run(main())

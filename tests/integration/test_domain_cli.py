"""The domain stage as operators run it: `processor domain` as its own process,
`processor run --with-domain` surviving a domain stage that cannot work, the stage's
supervisor restarting a crashed runner, and `processor event load`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from processor import app as app_module
from processor.app import DomainStage
from processor.core.settings import Settings
from processor.domain_runner.notices import Window
from processor.domain_runner.runner import DomainRunner, notice_settings
from processor.observability.metrics import Metrics
from processor.storage.pool import DbConnection, create_pool
from processor.stream.client import StreamClient, connect
from processor.tools.event_loader import load_event_rows, read_event_file
from processor.tools.replay import load_snapshot, recompute_stage
from processor.tools.simulator.event import load_event
from processor.tools.simulator.generator import GeneratorConfig, Simulation
from tests.conftest import ADMIN_URL
from tests.entries import BASE_MS, entry
from tests.integration.test_pipeline import add_all, drain

pytestmark = pytest.mark.integration


def child_env(settings: Settings, **overrides: str) -> dict[str, str]:
    """The environment that makes a `processor` child load exactly these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROCESSOR_")}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, bool):
            value = "true" if value else "false"
        env[f"PROCESSOR_{name.upper()}"] = str(value)
    env.update({f"PROCESSOR_{k.upper()}": v for k, v in overrides.items()})
    return env


async def run_cli(settings: Settings, *args: str, **overrides: str) -> tuple[int, str]:
    """`processor <args>` to completion; exit code and combined output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "processor",
        *args,
        env=child_env(settings, **overrides),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def log_events(text: str) -> list[dict[str, Any]]:
    events = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            doc = json.loads(line)
            if isinstance(doc, dict):
                events.append(doc)
    return events


async def wait_until(predicate: Callable[[], Any], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def scrape(port: int) -> dict[str, float]:
    """Unlabelled samples of /metrics (enough for counters without labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def readyz(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def group_info(redis: aioredis.Redis, stream: str, group: str) -> dict[str, int]:
    for info in await redis.xinfo_groups(stream):
        name = info["name"]
        if (name.decode() if isinstance(name, bytes) else name) == group:
            return {"lag": int(info.get("lag") or 0), "pending": int(info["pending"])}
    raise AssertionError(f"no group {group} on {stream}")


@pytest.fixture
async def event_db(db: asyncpg.Connection) -> asyncpg.Connection:
    await db.execute(
        "TRUNCATE public.timing_records, telemetry.outbox, telemetry.position_attributes,"
        " telemetry.domain_outputs, telemetry.domain_progress"
    )
    await load_event_rows(db, read_event_file())
    return db


@pytest.fixture
async def bare_settings(settings: Settings) -> AsyncIterator[Settings]:
    """Settings on a brand-new empty database: no telemetry schema (the processor
    migrates it) and no Directus tables — Directus's schema was never applied."""
    name = f"processor_bare_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(ADMIN_URL)._replace(path=f"/{name}"))
    try:
        yield settings.model_copy(update={"database_url": SecretStr(url)})
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_domain_process_times_what_the_core_stored(
    settings: Settings, redis_client: aioredis.Redis, event_db: asyncpg.Connection
) -> None:
    simulation = Simulation(load_event(), GeneratorConfig(devices=3, seed=3))
    await add_all(redis_client, settings.stream, [e.fields() for e in simulation.entries()])
    code, out = await run_cli(settings, "run", "--until-idle")
    assert code == 0, out
    assert await event_db.fetchval("SELECT count(*) FROM telemetry.positions") > 3000
    assert await event_db.fetchval("SELECT count(*) FROM public.timing_records") == 0
    notices = await redis_client.xlen(settings.notice_stream)
    assert notices > 0

    code, out = await run_cli(
        settings, "domain", "--until-idle", http_enabled="true", http_port="0"
    )
    assert code == 0, out
    events = {e["event"] for e in log_events(out)}
    assert {"schema_ready", "http_listening", "domain_stage_started"} <= events
    assert "domain_window_failed" not in events
    records = await event_db.fetchval("SELECT count(*) FROM public.timing_records")
    assert records > 0
    # Every notice handled and acknowledged by the domain group.
    assert await group_info(redis_client, settings.notice_stream, settings.domain_group) == {
        "lag": 0,
        "pending": 0,
    }
    # What the separate process wrote is what the live code computes for every stage.
    snapshot = await load_snapshot(event_db)
    for stage in (1, 2, 3):
        report = await recompute_stage(event_db, snapshot, stage, dry_run=True)
        assert report.changes == []


async def test_domain_process_is_ready_and_stops_cleanly_on_sigterm(
    settings: Settings,
    redis_client: aioredis.Redis,
    event_db: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    port = free_port()
    log_path = tmp_path / "domain.log"
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "processor",
            "domain",
            env=child_env(settings, http_enabled="true", http_port=str(port)),
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:

        async def ready() -> bool:
            try:
                return readyz(port)[0] == 200
            except OSError:
                return False

        await wait_until(ready, 30, "/readyz")
        assert readyz(port)[1]["checks"] == {"postgres": "ok", "redis": "ok", "consumer": "ok"}
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    events = [e["event"] for e in log_events(log_path.read_text())]
    assert code == 0
    assert events[-2:] == ["shutdown_requested", "domain_stage_stopped"]
    # It joined the domain group on the notice stream (removed with the test's keys).
    assert await group_info(redis_client, settings.notice_stream, settings.domain_group) == {
        "lag": 0,
        "pending": 0,
    }


async def test_run_until_idle_with_domain_times_the_last_batches_too(
    settings: Settings, redis_client: aioredis.Redis, event_db: asyncpg.Connection
) -> None:
    """One process: the pipeline drains the stream, then the stage takes the notices of
    its last batches before the process exits."""
    simulation = Simulation(load_event(), GeneratorConfig(devices=2, seed=7))
    await add_all(redis_client, settings.stream, [e.fields() for e in simulation.entries()])
    code, out = await run_cli(settings, "run", "--until-idle", "--with-domain")
    assert code == 0, out
    assert await event_db.fetchval("SELECT count(*) FROM public.timing_records") > 0
    assert await group_info(redis_client, settings.notice_stream, settings.domain_group) == {
        "lag": 0,
        "pending": 0,
    }
    snapshot = await load_snapshot(event_db)
    for stage in (1, 2, 3):
        assert (await recompute_stage(event_db, snapshot, stage, dry_run=True)).changes == []


async def test_run_with_domain_stores_everything_while_the_domain_stage_cannot_work(
    bare_settings: Settings, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """A realistic outage: the processor is deployed before Directus's schema is applied.
    Every domain batch fails (no public.* tables); the core must not notice."""
    settings = bare_settings
    first = [entry(f"W{d}", BASE_MS + s * 1000) for d in range(20) for s in range(150)]
    await add_all(redis_client, settings.stream, first)
    port = free_port()
    log_path = tmp_path / "run.log"
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "processor",
            "run",
            "--with-domain",
            env=child_env(settings, http_enabled="true", http_port=str(port)),
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        url = settings.database_url.get_secret_value()

        async def stored() -> int:
            try:
                conn = await asyncpg.connect(url)
            except (OSError, asyncpg.PostgresError):
                return 0
            try:
                return int(await conn.fetchval("SELECT count(*) FROM telemetry.positions"))
            except asyncpg.UndefinedTableError:
                return 0
            finally:
                await conn.close()

        async def domain_failed() -> bool:
            try:
                return scrape(port).get("processor_domain_failures_total", 0) >= 2
            except OSError:
                return False

        await wait_until(domain_failed, 30, "domain failures")
        await wait_until(lambda: _equals(stored, len(first)), 30, "the first positions")
        # The core keeps storing new data while the domain stage keeps failing.
        second = [
            entry(f"W{d}", BASE_MS + 150_000 + s * 1000) for d in range(20) for s in range(50)
        ]
        await add_all(redis_client, settings.stream, second)
        await wait_until(lambda: _equals(stored, len(first) + len(second)), 30, "the rest")
        metrics = scrape(port)
        assert metrics["processor_positions_inserted_total"] == len(first) + len(second)
        assert metrics["processor_domain_notices_total"] == 0
        assert metrics["processor_domain_restarts_total"] == 0  # the runner copes itself
        status, body = readyz(port)
        assert (status, body["checks"]["consumer"]) == (200, "ok")  # the core is ready
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    output = log_path.read_text()
    assert code == 0, output[-3000:]
    events = log_events(output)
    failures = [e for e in events if e["event"] == "domain_window_failed"]
    assert failures
    assert all("UndefinedTableError" in e["error"] for e in failures)
    assert [e["clean"] for e in events if e["event"] == "processor_stopped"] == [True]
    assert await stored() == len(first) + len(second)
    core = await group_info(redis_client, settings.stream, settings.group)
    assert core == {"lag": 0, "pending": 0}
    # The notices were not acknowledged: they wait for the domain stage to work again.
    domain = await group_info(redis_client, settings.notice_stream, settings.domain_group)
    assert domain["pending"] + domain["lag"] > 0


async def _equals(probe: Callable[[], Any], expected: int) -> bool:
    return bool(await probe() == expected)


async def test_supervisor_restarts_a_crashed_domain_runner(
    settings: Settings,
    redis_client: aioredis.Redis,
    event_db: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A runner that dies (here: twice, at start) is restarted after a backoff; the
    restarted one does the work, and the pipeline beside it is never disturbed."""

    class CrashingRunner(DomainRunner):
        crashes = 2

        async def run(self, *, until_idle: bool = False) -> None:
            if CrashingRunner.crashes:
                CrashingRunner.crashes -= 1
                raise RuntimeError("domain runner bug")
            await super().run(until_idle=until_idle)

    monkeypatch.setattr(app_module, "DomainRunner", CrashingRunner)
    metrics = Metrics()
    stage = DomainStage(settings, metrics)
    task = asyncio.create_task(stage.run())
    simulation = Simulation(load_event(), GeneratorConfig(devices=2, seed=5))
    entries = [e.fields() for e in simulation.entries()]
    await add_all(redis_client, settings.stream, entries)
    core = await drain(settings)
    assert core.registry.get_sample_value("processor_positions_inserted_total") == len(entries)

    async def caught_up() -> bool:
        info = await group_info(redis_client, settings.notice_stream, settings.domain_group)
        return info == {"lag": 0, "pending": 0}

    try:
        await wait_until(caught_up, 60, "the restarted stage to handle every notice")
    finally:
        stage.stop()
        await asyncio.wait_for(task, 30)
    assert metrics.registry.get_sample_value("processor_domain_restarts_total") == 2
    assert (metrics.registry.get_sample_value("processor_domain_notices_total") or 0) > 0
    assert await event_db.fetchval("SELECT count(*) FROM public.timing_records") > 0


async def test_failed_notices_are_retried_while_traffic_continues(
    settings: Settings, redis_client: aioredis.Redis
) -> None:
    """Under steady traffic the runner never reads an empty batch; a notice that failed
    must still be claimed and redone within about claim_idle + claim_interval."""
    # Every notice as soon as it comes: this test is about retries under traffic.
    domain_settings = notice_settings(settings.model_copy(update={"domain_batch_interval_s": 0}))
    handled: list[tuple[float, Window]] = []
    failed_once = False

    async def handler(conn: DbConnection, window: Window) -> None:
        nonlocal failed_once
        if window.device_id == "FIRST" and not failed_once:
            failed_once = True
            raise RuntimeError("transient")
        handled.append((time.monotonic(), window))

    redis = connect(domain_settings)
    pool = await create_pool(settings)
    runner = DomainRunner(
        domain_settings, StreamClient(redis, domain_settings), pool, handler, Metrics()
    )
    task = asyncio.create_task(runner.run())

    def notice(device: str, ts: int) -> dict[bytes, bytes]:
        return {b"v": b"1", b"windows": msgspec.json.encode([[device, ts, ts]])}

    try:
        await redis_client.xadd(settings.notice_stream, notice("FIRST", BASE_MS))  # type: ignore[arg-type]
        started = time.monotonic()
        # Traffic goes on until the failed notice is redone (about claim_idle +
        # claim_interval), or for a deadline long enough for a loaded machine.
        seconds = settings.claim_idle_ms / 1000 + 60
        sent = 0
        while time.monotonic() - started < seconds:  # a notice every 20 ms: never idle
            await redis_client.xadd(settings.notice_stream, notice("STEADY", BASE_MS + sent))  # type: ignore[arg-type]
            sent += 1
            if any(w.device_id == "FIRST" for _, w in handled):
                break
            await asyncio.sleep(0.02)
        traffic_ended = time.monotonic()

        async def steady_done() -> bool:
            covered = {
                ms
                for _, w in handled
                if w.device_id == "STEADY"
                for ms in range(w.start_ms, w.end_ms + 1)
            }
            return covered >= set(range(BASE_MS, BASE_MS + sent))

        await wait_until(steady_done, 60, "every steady notice to be handled")
    finally:
        runner.stop()
        await asyncio.wait_for(task, 30)
        await pool.close()
        await redis.aclose()
    assert failed_once
    redone = [t for t, w in handled if w.device_id == "FIRST"]
    assert redone, "the failed notice was not retried"
    assert redone[0] < traffic_ended  # during the traffic, not after it
    # Every steady notice was handled (a batch merges a device's notices into one window).
    covered: set[int] = set()
    for _, w in handled:
        if w.device_id == "STEADY":
            covered.update(range(w.start_ms, w.end_ms + 1))
    assert covered >= set(range(BASE_MS, BASE_MS + sent))


async def test_event_load_is_idempotent_and_refuses_without_the_tables(
    settings: Settings, db: asyncpg.Connection, bare_settings: Settings, tmp_path: Path
) -> None:
    doc = read_event_file()
    tables = ("events", "devices", "entries", "stages", "geofences")

    async def counts() -> dict[str, int]:
        return {t: int(await db.fetchval(f"SELECT count(*) FROM public.{t}")) for t in tables}

    outputs = []
    for _ in range(2):
        code, out = await run_cli(settings, "event", "load")
        assert code == 0, out
        outputs.append(out)
        assert await counts() == {t: len(doc[t]) for t in tables}
    assert outputs[0] == outputs[1]
    assert "events 1, devices 20, entries 20, stages 3, geofences 21" in " ".join(
        outputs[0].split()
    )

    # Another file: rows are upserted by id (here a renamed event), nothing duplicated.
    doc["events"][0]["name"] = "Renamed rally"
    path = tmp_path / "event.json"
    path.write_text(json.dumps(doc))
    try:
        code, out = await run_cli(settings, "event", "load", "--file", str(path))
        assert code == 0, out
        assert await db.fetchval("SELECT name FROM public.events WHERE id = 1") == "Renamed rally"
        assert await counts() == {t: len(doc[t]) for t in tables}
    finally:
        await load_event_rows(db, read_event_file())

    code, out = await run_cli(bare_settings, "event", "load")
    assert code == 1
    assert "apply the Directus snapshot or src/processor/storage/directus_fixture.sql first" in (
        " ".join(out.split())
    )

"""The race-control page in a real browser (headless Debian Chromium via Playwright)
during a simulated race: `processor run --with-domain` as a child process (live feed on,
no Directus), the gateway in-process, the race fed to the stream slice by slice. Cars
move, the scripted stop raises a visible alert within seconds of the domain stage
writing it, and the page's leaderboard order is `processor leaderboard --json`'s.
`GATEWAY_SCREENSHOTS=1` also writes screenshots to docs/gateway/."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from processor.core.settings import Settings
from processor.gateway.command import GatewayService
from processor.tools.event_loader import load_event_rows, read_event_file
from processor.tools.simulator.event import load_event
from processor.tools.simulator.generator import GeneratorConfig, Simulation
from processor.tools.simulator.scenarios import parse
from tests.faults.harness import ProcessorProcess, settings_env
from tests.integration.test_pipeline import add_all

pytestmark = pytest.mark.integration

CHROMIUM = Path(os.environ.get("PROCESSOR_CHROMIUM", "/usr/bin/chromium"))
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "gateway"
RC = "page-test-token"
STOP = "stop:entry=2,stage=1,fraction=0.5,duration=240"
DEVICES = 8


def _require_chromium() -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (set PROCESSOR_CHROMIUM)")
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright (python) is not installed")


@pytest.fixture
async def race_db(db: asyncpg.Connection) -> asyncpg.Connection:
    await db.execute(
        "TRUNCATE public.timing_records, public.stage_results, public.penalties, public.alerts,"
        " telemetry.outbox, telemetry.position_attributes, telemetry.domain_outputs,"
        " telemetry.domain_progress"
    )
    await load_event_rows(db, read_event_file())
    await db.execute("UPDATE public.events SET public = true")
    return db


@pytest.fixture
def page_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "live_enabled": True,
            "gateway_race_control_token": SecretStr(RC),
            "gateway_interval_ms": 250,
            "dispatch_poll_s": 0.2,
        }
    )


@pytest.fixture
async def processor(page_settings: Settings, race_db: asyncpg.Connection) -> AsyncIterator[None]:
    proc = ProcessorProcess(
        page_settings,
        "--with-domain",
        consumer="page",
        live_enabled="true",
        domain_tick_s="1",
        domain_batch_interval_s="0.5",
    ).start()
    try:
        yield
    finally:
        code = proc.terminate()
        assert code == 0, proc.log.read_text()[-3000:]


def leaderboard_json(settings: Settings) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "processor", "leaderboard", "--stage", "1", "--json"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    board: dict[str, object] = json.loads(done.stdout)
    return board


async def test_race_control_page_during_a_race(
    page_settings: Settings,
    processor: None,
    race_db: asyncpg.Connection,
    redis_client: aioredis.Redis,
) -> None:
    _require_chromium()
    from playwright.async_api import async_playwright

    sim = Simulation(
        load_event(), GeneratorConfig(devices=DEVICES, seed=7, scenarios=(parse(STOP),))
    )
    entries = [e.fields() for e in sim.entries()]
    async with GatewayService(page_settings, port=0) as service, async_playwright() as pw:
        base = f"http://127.0.0.1:{service.port}"
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            context = await browser.new_context(viewport={"width": 1400, "height": 900})
            await context.add_init_script(f"sessionStorage.setItem('gateway-token', '{RC}')")
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(f"{base}/?stage=1")
            await page.wait_for_selector("#map polyline.route", timeout=15_000)
            assert await page.locator("#status").text_content() == "live"

            # The race, slice by slice: cars appear and move on the map.
            slices = [entries[i : i + 400] for i in range(0, len(entries), 400)]
            await add_all(redis_client, page_settings.stream, slices[0])
            await page.wait_for_selector("#cars g.car", timeout=15_000)
            before = await _car_positions(page)
            for chunk in slices[1:4]:
                await add_all(redis_client, page_settings.stream, chunk)
                await asyncio.sleep(0.3)
            await page.wait_for_function(
                """(before) => [...document.querySelectorAll('#cars g.car')].some(
                    (c) => before[c.id] && before[c.id] !== c.getAttribute('transform'))""",
                arg=before,
                timeout=15_000,
            )

            # The rest; the scripted stop's alert shows within seconds of its commit.
            alert_seen_db: float | None = None
            for chunk in slices[4:]:
                await add_all(redis_client, page_settings.stream, chunk)
                await asyncio.sleep(0.2)
                if alert_seen_db is None and await _alerts(race_db):
                    alert_seen_db = time.monotonic()
            while alert_seen_db is None:
                if await _alerts(race_db):
                    alert_seen_db = time.monotonic()
                await asyncio.sleep(0.1)
            await page.wait_for_selector("#alerts li[data-kind]", timeout=60_000)
            shown_after = time.monotonic() - alert_seen_db
            print(f"alert shown {shown_after:.2f} s after it was seen in the database")
            assert shown_after < 5.0
            text = await page.locator("#alerts li").first.text_content() or ""
            assert "car 102" in text  # the stopped car (entry 2) is named by its number

            # The leaderboard order is `processor leaderboard --json`'s, once settled.
            async def settled() -> bool:
                n = await race_db.fetchval("SELECT count(*) FROM telemetry.outbox")
                undelivered = await race_db.fetchval(
                    "SELECT count(*) FROM telemetry.outbox WHERE delivered_at IS NULL"
                )
                return bool(n) and undelivered == 0

            deadline = time.monotonic() + 120
            while not await settled():
                assert time.monotonic() < deadline, "the outbox never drained"
                await asyncio.sleep(0.2)
            rows: list[dict[str, int]] = leaderboard_json(page_settings)["rows"]  # type: ignore[assignment]
            expected = [r["entry"] for r in rows]
            await page.wait_for_function(
                """(expected) => JSON.stringify([...document.querySelectorAll(
                    '#leaderboard tbody tr')].map((r) => Number(r.dataset.entry)))
                    === JSON.stringify(expected)""",
                arg=expected,
                timeout=20_000,
            )
            assert not errors, errors
            if os.environ.get("GATEWAY_SCREENSHOTS"):
                SHOTS.mkdir(parents=True, exist_ok=True)
                await page.screenshot(path=str(SHOTS / "race-control.png"), full_page=True)

            # The spectator page: the board and cars, no alerts, no token field.
            public = await context.new_page()
            await public.goto(f"{base}/public?stage=1")
            await public.wait_for_selector("#leaderboard tbody tr", timeout=15_000)
            assert not await public.locator("#alerts li").count()
            assert not await public.locator("#token").is_visible()
            if os.environ.get("GATEWAY_SCREENSHOTS"):
                await public.set_viewport_size({"width": 390, "height": 844})
                await public.screenshot(path=str(SHOTS / "public-phone.png"), full_page=True)
        finally:
            await browser.close()


async def _alerts(db: asyncpg.Connection) -> int:
    n: int = await db.fetchval("SELECT count(*) FROM public.alerts")
    return n


async def _car_positions(page: object) -> dict[str, str]:
    positions: dict[str, str] = await page.evaluate(  # type: ignore[attr-defined]
        """() => Object.fromEntries([...document.querySelectorAll('#cars g.car')].map(
            (c) => [c.id, c.getAttribute('transform')]))"""
    )
    return positions

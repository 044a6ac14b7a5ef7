"""The Studio as race control sees it: a real Directus with the snapshot, the project's
extensions, roles and default layouts, read in headless Chromium logged in as race control.

A small race (the sample event's configuration, stage SS1's results, timing records, penalties
and alerts, written over REST as the processor's rows would be) is shown on the pages an
official works with; the test asserts what the pages print: the collection folders, the
results by rank with durations as m:ss.s, a crossing in the event's zone to the tenth (typed
in, stored to the millisecond in UTC), the alerts' severity colours.

Screenshots go to $PROCESSOR_STUDIO_SCREENSHOTS when it is set
(`PROCESSOR_STUDIO_SCREENSHOTS=docs/studio`), so CI never rewrites the docs.

Skipped, with the reason, where Node.js (Directus) or Chromium is missing.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from processor.directus.client import AdminClient
from processor.directus.presets import apply_presets
from tests.integration.directus_server import (
    DIRECTUS_TIMEOUT_S,
    DirectusServer,
    require_node,
    running_directus,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(DIRECTUS_TIMEOUT_S)]

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_EVENT = ROOT / "src" / "processor" / "tools" / "simulator" / "data" / "sample-event.json"
CHROMIUM = Path(os.environ.get("PROCESSOR_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = os.environ.get("PROCESSOR_STUDIO_SCREENSHOTS")
RACE_CONTROL_ROLE = "race_control"
VIEWPORT: Any = {"width": 1440, "height": 860}
ZONE = "Europe/Vilnius"  # the sample event's; UTC+03:00 on 2026-05-01

# -- a small race --------------------------------------------------------------------------------

SS1 = 1
SS1_START, SS1_FINISH = 1, 7  # geofence ids
FIRST_START_MS = 1777615260000  # 2026-05-01T06:01:00Z = 09:01:00 in Vilnius
START_INTERVAL_MS = 60_000
DNF, DNS = 17, 20  # entries that do not finish / do not start
SPEEDING = (5, 60_000)  # entry, penalty
WAIVED = (9, 900_000)  # entry, a missed-waypoint penalty an official cancelled


def _iso(ms: int) -> str:
    from datetime import UTC, datetime

    return (
        datetime.fromtimestamp(ms / 1000, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _elapsed_ms(entry: int) -> int:
    """Distinct stage times, not in entry order (so rank order ≠ id order), with milliseconds."""
    return 252_200 + (entry * 7 + 3) % 20 * 3_117 + entry * 13


def results(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """SS1's stage results as the processor ranks them: by total, then number."""
    rows = []
    for e in entries:
        start = FIRST_START_MS + (e["id"] - 1) * START_INTERVAL_MS + e["id"] * 37
        penalty = SPEEDING[1] if e["id"] == SPEEDING[0] else 0
        row: dict[str, Any] = {
            "key": f"auto:{SS1}:{e['id']}",
            "source": "auto",
            "stage": SS1,
            "entry": e["id"],
            "penalty_ms": penalty,
            "splits": [],
        }
        if e["id"] == DNS:
            row.update(status="dns")
        elif e["id"] == DNF:
            row.update(status="dnf", start_at=_iso(start))
        else:
            elapsed = _elapsed_ms(e["id"])
            row.update(
                status="finished",
                start_at=_iso(start),
                finish_at=_iso(start + elapsed),
                elapsed_ms=elapsed,
                total_ms=elapsed + penalty,
            )
        rows.append(row)
    number = {e["id"]: e["number"] for e in entries}
    klass = {e["id"]: e["class"] for e in entries}
    finished = sorted(
        (r for r in rows if r["status"] == "finished"),
        key=lambda r: (r["total_ms"], number[r["entry"]]),
    )
    by_class: dict[str, int] = {}
    for i, r in enumerate(finished):
        by_class[klass[r["entry"]]] = by_class.get(klass[r["entry"]], 0) + 1
        r.update(
            rank=i + 1,
            class_rank=by_class[klass[r["entry"]]],
            gap_leader_ms=r["total_ms"] - finished[0]["total_ms"],
            gap_ahead_ms=r["total_ms"] - finished[i - 1]["total_ms"] if i else None,
        )
    return rows


def timing_records(result_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in result_rows:
        for geofence, kind, at in (
            (SS1_START, "start_line", r.get("start_at")),
            (SS1_FINISH, "finish_line", r.get("finish_at")),
        ):
            if at is None:
                continue
            ms = _ms(at)
            rows.append(
                {
                    "key": f"auto:{r['entry']}:{geofence}:{ms - 420}:{ms + 580}:0",
                    "source": "auto",
                    "stage": SS1,
                    "entry": r["entry"],
                    "geofence": geofence,
                    "kind": kind,
                    "crossed_at": at,
                    "status": "valid",
                    "fix_before_at": _iso(ms - 420),
                    "fix_after_at": _iso(ms + 580),
                    "details": {"method": "interpolated"},
                }
            )
    return rows


def _ms(iso: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def penalties() -> list[dict[str, Any]]:
    speeding, waived = SPEEDING[0], WAIVED[0]
    return [
        {
            "key": f"auto:{SS1}:{speeding}:speeding:4:{FIRST_START_MS + 300_000}",
            "source": "auto",
            "stage": SS1,
            "entry": speeding,
            "kind": "speeding",
            "amount_ms": SPEEDING[1],
            "reason": "71.8 km/h in a 60 km/h zone for 6.0 s",
            "status": "valid",
            "details": {"zone": 4, "max_kmh": 71.8},
        },
        {
            "key": f"auto:{SS1}:{waived}:missed_waypoint:5",
            "source": "manual",
            "stage": SS1,
            "entry": waived,
            "kind": "missed_waypoint",
            "amount_ms": WAIVED[1],
            "reason": "SS1 WP2 not validated",
            "status": "cancelled",
            "note": "Waived: the marshal's log shows the crew at WP2 (clerk of the course)",
            "details": {"waypoint": 5},
        },
    ]


ALERTS = (
    # entry, kind, severity, status, start offset (s after the first start), end (s), note
    (12, "panic", "critical", "open", 1_290.4, None, None),
    (DNF, "signal_lost", "critical", "open", 1_020.8, None, None),
    (7, "stopped", "warning", "acknowledged", 640.2, 760.9, "Crew OK by phone; puncture"),
    (3, "gps_jump", "warning", "ended", 230.5, 230.5, None),
    (10, "off_route", "warning", "dismissed", 880.1, 912.6, "Shortcut through the service road"),
)


def alerts() -> list[dict[str, Any]]:
    rows = []
    for entry, kind, severity, status, start_s, end_s, note in ALERTS:
        start = FIRST_START_MS + round(start_s * 1000)
        rows.append(
            {
                "key": f"auto:{entry}:{kind}:{start}",
                "source": "auto",
                "event": 1,
                "stage": SS1,
                "entry": entry,
                "kind": kind,
                "severity": severity,
                "status": status,
                "started_at": _iso(start),
                "ended_at": None if end_s is None else _iso(FIRST_START_MS + round(end_s * 1000)),
                "details": {},
                "note": note,
            }
        )
    return rows


def race_rows() -> list[tuple[str, list[dict[str, Any]]]]:
    """Every row of the small race, collection by collection, in insertion order."""
    doc = json.loads(SAMPLE_EVENT.read_text())
    events = [{**e, "public": True} for e in doc["events"]]
    result_rows = results(doc["entries"])
    return [
        ("events", events),
        ("devices", doc["devices"]),
        ("stages", doc["stages"]),
        ("geofences", doc["geofences"]),
        ("entries", doc["entries"]),
        ("stage_results", result_rows),
        ("timing_records", timing_records(result_rows)),
        ("penalties", penalties()),
        ("alerts", alerts()),
    ]


def expected_ranking() -> list[tuple[int, int, str]]:
    """(rank, car number, total as m:ss.s) of SS1, best first."""
    doc = json.loads(SAMPLE_EVENT.read_text())
    number = {e["id"]: e["number"] for e in doc["entries"]}
    ranked = sorted(
        (r for r in results(doc["entries"]) if r["status"] == "finished"), key=lambda r: r["rank"]
    )
    return [(r["rank"], number[r["entry"]], _m_ss_s(r["total_ms"])) for r in ranked]


def _m_ss_s(ms: int) -> str:
    minutes, rest = divmod(ms // 100, 600)
    return f"{minutes}:{rest // 10:02d}.{rest % 10}"


# -- fixtures ------------------------------------------------------------------------------------


def _require_chromium() -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (set PROCESSOR_CHROMIUM): no Studio screenshots")
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright (python) is not installed")


class Studio:
    def __init__(self, server: DirectusServer, email: str, password: str) -> None:
        self.server = server
        self.email = email
        self.password = password


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    """Directus with the snapshot and the extensions, roles and Flows applied by
    `processor directus apply`, the default layouts, the small race, and a race-control user."""
    require_node()
    _require_chromium()
    with running_directus(tmp_path_factory.mktemp("studio"), prefix="processor_studio") as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROCESSOR_")}
        env.update(
            PROCESSOR_DIRECTUS_URL=server.base_url,
            PROCESSOR_DIRECTUS_ADMIN_TOKEN=server.admin_token,
        )
        done = subprocess.run(
            [sys.executable, "-m", "processor", "directus", "apply"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        asyncio.run(_apply_presets(server))
        for collection, rows in race_rows():
            server.admin("POST", f"/items/{collection}", rows)
        roles = server.admin("GET", "/roles?fields=id,name&limit=-1")
        role = next(r["id"] for r in roles if r["name"] == "Race control")
        email, password = f"clerk-{secrets.token_hex(3)}@example.com", secrets.token_urlsafe(12)
        server.admin(
            "POST",
            "/users",
            {
                "email": email,
                "password": password,
                "role": role,
                "first_name": "Clerk",
                "last_name": "of the course",
            },
        )
        yield Studio(server, email, password)


async def _apply_presets(server: DirectusServer) -> None:
    async with AdminClient(server.base_url, SecretStr(server.admin_token)) as client:
        await apply_presets(client)


# -- the browser ---------------------------------------------------------------------------------


def _screenshot_path(name: str) -> Path | None:
    if not SCREENSHOTS:
        return None
    folder = Path(SCREENSHOTS)
    if not folder.is_absolute():
        folder = ROOT / folder
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.png"


async def _shoot(page: Any, name: str, element: Any = None) -> None:
    """A screenshot for docs/studio (only with PROCESSOR_STUDIO_SCREENSHOTS) of the page or of
    one element, palette-compressed when pngquant is installed."""
    path = _screenshot_path(name)
    if path is None:
        return
    await (element or page).screenshot(path=str(path))
    pngquant = shutil.which("pngquant")
    if pngquant:
        quantize = await asyncio.create_subprocess_exec(
            *(pngquant, "--force", "--skip-if-larger", "--quality", "60-90", "--strip"),
            *("--output", str(path), str(path)),
        )
        await quantize.wait()


def test_studio_as_race_control(studio: Studio) -> None:
    asyncio.run(_browse(studio))


async def _browse(studio: Studio) -> None:
    from playwright.async_api import async_playwright

    base = studio.server.base_url
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            # The browser is in New York: every time shown must still be the event's (Vilnius).
            context = await browser.new_context(
                viewport=VIEWPORT, timezone_id="America/New_York", locale="en-US"
            )
            # The Studio's right-hand sidebar closed, as on a laptop: the table is what counts.
            await context.add_init_script("localStorage.setItem('app-store-sidebar-open', 'false')")
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            # Vue reports an extension's failure as a console warning, not a page error.
            page.on(
                "console", lambda msg: errors.append(msg.text) if _extension_failed(msg) else None
            )

            await page.goto(f"{base}/admin/login")
            await page.fill("input[type=email]", studio.email)
            await page.fill("input[type=password]", studio.password)
            await page.click("button[type=submit]")
            await page.wait_for_url(re.compile(r"/admin/content"), timeout=60_000)

            await _results_by_rank(page, base)
            await _navigation_folders(page)
            await _timing_record_form(page, base, studio)
            await _alert_colours(page, base)
            await _stage_lists_its_results(page, base)
            assert not errors, errors
        finally:
            await browser.close()


def _extension_failed(message: Any) -> bool:
    text: str = message.text
    return message.type in ("error", "warning") and (
        "datetime-tenths" in text or "duration-ms" in text or "/extensions/" in text
    )


def _field(page: Any, label: str) -> Any:
    """A form field by its label (the field's name as the Studio prints it)."""
    name = page.locator(".field-name", has_text=re.compile(rf"^\s*{re.escape(label)}\b"))
    return page.locator(".field").filter(has=name).first


async def _rows(page: Any) -> list[str]:
    await page.wait_for_selector("table tbody tr", timeout=30_000)
    rows: list[str] = await page.locator("table tbody tr").all_inner_texts()
    return [" ".join(r.split()) for r in rows]


async def _results_by_rank(page: Any, base: str) -> None:
    """The default layout: SS1's results by rank, totals and gaps as m:ss.s."""
    await page.goto(f"{base}/admin/content/stage_results")
    expected = expected_ranking()
    await page.get_by_text(expected[0][2], exact=True).first.wait_for(timeout=30_000)
    rows = await _rows(page)
    shown = []
    for row in rows:
        match = re.search(r"SS1 Nemenčinė forest (\d+) #(\d+) .*? finished (\d+:\d\d\.\d)", row)
        if match:
            shown.append((int(match[1]), int(match[2]), match[3]))
    assert shown == expected, rows[:5]
    # No raw millisecond integers anywhere in the table; gaps are signed.
    assert not any(re.search(r"\b\d{5,}\b", r) for r in rows), rows[:3]
    assert re.search(r"\+0:0\d\.\d", rows[1]), rows[1]
    # The unranked last: the DNF, then the DNS.
    assert "DNF" in rows[-2], rows[-2:]
    assert "DNS" in rows[-1], rows[-2:]
    await _shoot(page, "results-by-rank")


async def _navigation_folders(page: Any) -> None:
    nav = page.locator("#navigation")
    for folder in ("Race", "Timing & results", "Configuration", "System"):
        await nav.get_by_text(folder, exact=True).first.wait_for(timeout=10_000)
    text = " ".join((await nav.inner_text()).split())
    # Race: events, stages, entries; then the outputs under Timing & results.
    words = ("Race", "Events", "Stages", "Entries", "Timing & results", "Stage Results", "Alerts")
    order = [text.index(w) for w in words]
    assert order == sorted(order), text
    await _shoot(page, "navigation", nav)


async def _timing_record_form(page: Any, base: str, studio: Studio) -> None:
    """A crossing in the event's zone to the tenth; a typed tenth is stored in UTC."""
    records = studio.server.admin(
        "GET",
        "/items/timing_records?filter[entry][_eq]=1&filter[kind][_eq]=finish_line"
        "&fields=id,crossed_at",
    )
    record = records[0]
    local = _local(_ms(record["crossed_at"]))
    await page.goto(f"{base}/admin/content/timing_records/{record['id']}")
    # The title names the car, the crew and the stage (the collection's display template).
    await page.get_by_text(
        "#101 Jonas Kazlauskas / Tomas Petrauskas · SS1 Nemenčinė forest"
    ).first.wait_for(timeout=30_000)
    field = _field(page, "Crossed at")
    await field.get_by_text(f"{ZONE} (UTC+03:00)").first.wait_for(timeout=30_000)
    assert await field.locator(".date input").input_value() == local[:10]
    assert await field.locator(".time input").input_value() == local[11:21]  # HH:MM:SS.s

    await field.locator(".time input").fill("09:05:12.4")
    await _shoot(page, "timing-record-form")
    await page.locator("header button:has(i[data-icon=check])").click()
    await page.wait_for_url(re.compile(r"/admin/content/timing_records$"), timeout=30_000)
    saved = studio.server.admin("GET", f"/items/timing_records/{record['id']}?fields=crossed_at")
    assert saved["crossed_at"] == local[:10] + "T06:05:12.400Z", saved


def _local(ms: int) -> str:
    """`YYYY-MM-DD HH:MM:SS.s` in the event's zone (truncated to the tenth)."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    at = datetime.fromtimestamp(ms / 1000, tz=ZoneInfo(ZONE))
    return at.strftime("%Y-%m-%d %H:%M:%S") + f".{ms % 1000 // 100}"


async def _alert_colours(page: Any, base: str) -> None:
    """Newest first, in the event's zone; severities, kinds and statuses as coloured chips."""
    await page.goto(f"{base}/admin/content/alerts")
    await page.get_by_text("panic", exact=True).first.wait_for(timeout=30_000)
    rows = await _rows(page)
    panic_at = _local(FIRST_START_MS + 1_290_400)[11:21]
    assert rows[0].startswith(panic_at), rows[0]
    assert all(w in rows[0] for w in ("critical", "panic", "open", "#301")), rows[0]
    colours = {}
    for text in ("critical", "warning", "acknowledged"):
        chip = page.locator(".v-chip", has_text=re.compile(rf"^\s*{text}\s*$")).first
        style = await chip.get_attribute("style") or ""
        colours[text] = re.search(r"--v-chip-background-color:\s*(#[0-9A-Fa-f]{6})", style)
    assert {k: m and m[1].upper() for k, m in colours.items()} == {
        "critical": "#E35169",  # red
        "warning": "#FFA439",  # amber
        "acknowledged": "#2ECDA7",  # green
    }
    await _shoot(page, "alerts")


async def _stage_lists_its_results(page: Any, base: str) -> None:
    """The stage's form lists its results by rank (the one-to-many alias)."""
    await page.goto(f"{base}/admin/content/stages/{SS1}")
    results_field = _field(page, "Results")
    first, second = expected_ranking()[:2]
    await results_field.get_by_text(f"#{first[1]} ").first.wait_for(timeout=30_000)
    text = " ".join((await results_field.inner_text()).split())
    assert f"1 · #{first[1]} " in text, text
    assert first[2] in text, text
    assert text.index(f"#{first[1]} ") < text.index(f"#{second[1]} "), text
    await results_field.evaluate("el => el.scrollIntoView({block: 'start'})")
    await _shoot(page, "stage-results-list")

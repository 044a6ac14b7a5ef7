"""Roles, permissions and Flows as code, against a real Directus 10.13.4.

`processor directus apply` on the project's snapshot: applying twice changes nothing and a
tampered Directus converges back; race control, the timekeeper, the public and the dispatcher
can do what ADR 0011 says and get 403 for the rest; the officials'-intent Flow turns an
official's edit of an automatic row into a manual row (single, batch and array updates with a
login's access token, and a note saved in the Studio itself in headless Chromium), except an
alert's status/note; the example Flow notifies race control once for a critical alert
announced in processor_events; all of it survives a Directus restart.

Automatic rows are written with SQL, as the processor writes them (never through Directus).
Skipped only without Node.js (or with PROCESSOR_SKIP_DIRECTUS=1); the Studio edit also needs
Chromium and playwright.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from processor.cli import app
from processor.directus.access import DISPATCHER, DISPATCHER_USER, RACE_CONTROL, TIMEKEEPER
from processor.directus.apply import Outcome
from processor.directus.flows import critical_alert, officials_intent
from tests.integration.directus_server import (
    DIRECTUS_TIMEOUT_S,
    DirectusServer,
    apply_access,
    running_directus,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(DIRECTUS_TIMEOUT_S)]

SAMPLE_EVENT = (
    Path(__file__).resolve().parents[2]
    / "src"
    / "processor"
    / "tools"
    / "simulator"
    / "data"
    / "sample-event.json"
)
PRIVATE_EVENT = 2  # a second event, not public
CHROMIUM = Path(os.environ.get("PROCESSOR_CHROMIUM", "/usr/bin/chromium"))


@dataclass(frozen=True)
class Site:
    """The Directus under test after one `apply`, with a user per role."""

    server: DirectusServer
    first: Outcome
    dispatcher_token: str
    race_control: str  # an access token from a login, as the Studio holds one
    race_control_id: str
    race_control_login: tuple[str, str]  # email, password
    timekeeper: str
    rows: dict[str, int]  # name → id of the rows written as the processor writes them


def _sql(server: DirectusServer, statement: str, *args: Any) -> Any:
    with psycopg.connect(server.database_url, autocommit=True) as conn:
        cur = conn.execute(statement, args or None)
        return cur.fetchall() if cur.description else None


def _load(server: DirectusServer) -> dict[str, int]:
    """The sample event (public) and a private one; automatic outputs as the processor
    writes them (SQL, source auto)."""
    doc = json.loads(SAMPLE_EVENT.read_text())
    doc["events"][0]["public"] = True
    for collection in ("events", "devices", "stages", "geofences", "entries"):
        server.admin("POST", f"/items/{collection}", doc[collection])
    server.admin(
        "POST",
        "/items/events",
        {
            "id": PRIVATE_EVENT,
            "name": "Private test day",
            "starts_at": "2026-05-02T05:00:00.000Z",
            "ends_at": "2026-05-02T14:00:00.000Z",
            "public": False,
        },
    )
    server.admin(
        "POST",
        "/items/stages",
        {
            "id": 90,
            "event": PRIVATE_EVENT,
            "name": "Shakedown",
            "sequence": 1,
            "opens_at": "2026-05-02T06:00:00.000Z",
            "closes_at": "2026-05-02T07:00:00.000Z",
        },
    )
    server.admin(
        "POST",
        "/items/entries",
        {"id": 90, "event": PRIVATE_EVENT, "number": 900, "crew_name": "Test / Crew", "device": 1},
    )

    def insert(table: str, values: dict[str, Any]) -> int:
        names = ", ".join(values)
        marks = ", ".join(["%s"] * len(values))
        rows = _sql(
            server,
            f"INSERT INTO public.{table} ({names}) VALUES ({marks}) RETURNING id",
            *values.values(),
        )
        return int(rows[0][0])

    t0 = "2026-05-01T06:01:00.123Z"
    rows: dict[str, int] = {}
    for name, entry in (("finish_a", 1), ("finish_b", 2), ("finish_c", 3)):
        rows[name] = insert(
            "timing_records",
            {
                "key": f"auto:1:{entry}:finish",
                "stage": 1,
                "entry": entry,
                "geofence": 1,
                "kind": "finish_line",
                "ordinal": 0,
                "crossed_at": t0,
                "source": "auto",
                "status": "valid",
            },
        )
    penalties = (
        ("penalty_a", 1),
        ("penalty_b", 2),
        ("penalty_c", 3),
        ("penalty_d", 4),
        ("penalty_studio", 5),
    )
    for name, entry in penalties:
        rows[name] = insert(
            "penalties",
            {
                "key": f"auto:1:{entry}:speeding",
                "stage": 1,
                "entry": entry,
                "kind": "speeding",
                "amount_ms": 10_000,
                "source": "auto",
            },
        )
    for name, stage, entry in (("result_public", 1, 1), ("result_private", 90, 90)):
        rows[name] = insert(
            "stage_results",
            {
                "key": f"auto:{stage}:{entry}",
                "stage": stage,
                "entry": entry,
                "status": "finished",
                "elapsed_ms": 600_000,
                "total_ms": 610_000,
                "rank": 1,
                "note": "steward's remark",
                "source": "auto",
            },
        )
    for name, severity, kind in (
        ("alert_critical", "critical", "stopped"),
        ("alert_warning", "warning", "stopped"),
        ("alert_edit", "warning", "signal_lost"),
        ("alert_work", "critical", "stopped"),
    ):
        rows[name] = insert(
            "alerts",
            {
                "key": f"auto:{name}",
                "event": 1,
                "stage": 1,
                "entry": 5,
                "kind": kind,
                "severity": severity,
                "started_at": t0,
                "status": "open",
                "source": "auto",
            },
        )
    return rows


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with running_directus(tmp_path_factory.mktemp("directus-access")) as server:
        rows = _load(server)
        dispatcher_token = secrets.token_urlsafe(24)
        first = apply_access(server, dispatcher_token)
        password = secrets.token_urlsafe(12)
        rc_email, tk_email = "race.control@example.com", "timekeeper@example.com"
        rc_id = server.create_user(RACE_CONTROL.id, email=rc_email, password=password)
        server.create_user(TIMEKEEPER.id, email=tk_email, password=password)
        yield Site(
            server,
            first,
            dispatcher_token,
            server.login(rc_email, password),
            rc_id,
            (rc_email, password),
            server.login(tk_email, password),
            rows,
        )


def _row(site: Site, table: str, name: str, *columns: str) -> tuple[Any, ...]:
    rows = _sql(
        site.server,
        f"SELECT {', '.join(columns)} FROM public.{table} WHERE id = %s",
        site.rows[name],
    )
    return tuple(rows[0])


# -- apply -------------------------------------------------------------------------------------


def test_apply_twice_changes_nothing(site: Site) -> None:
    first = site.first.plan
    kinds = {c.kind for c in first.changes}
    assert kinds == {"role", "permission", "user", "flow", "operation"}
    assert all(c.change == "create" for c in first.changes)
    assert not first.warnings, first.warnings

    again = apply_access(site.server, site.dispatcher_token)
    assert again.plan.changes == []
    assert again.plan.requests == []
    assert again.plan.unchanged == len([c for c in first.changes if c.kind != "operation"])

    # The command itself, with the tokens from the environment (never on the command line).
    result = CliRunner().invoke(
        app,
        ["directus", "apply", "--url", site.server.base_url, "--dry-run"],
        env={
            "PROCESSOR_DIRECTUS_ADMIN_TOKEN": site.server.admin_token,
            "PROCESSOR_DIRECTUS_TOKEN": site.dispatcher_token,
        },
    )
    assert result.exit_code == 0, result.output
    assert "0 would change" in result.output
    assert site.dispatcher_token not in result.output
    assert site.server.admin_token not in result.output


def test_a_tampered_directus_converges_back(site: Site) -> None:
    server = site.server
    perms = server.admin(
        "GET",
        f"/permissions?limit=-1&filter[role][_eq]={RACE_CONTROL.id}"
        "&filter[collection][_eq]=penalties&filter[action][_eq]=update",
    )
    server.admin("DELETE", f"/permissions/{perms[0]['id']}")  # a declared one gone
    server.admin(  # an undeclared one: the timekeeper deleting events
        "POST", "/permissions", {"role": TIMEKEEPER.id, "collection": "events", "action": "delete"}
    )
    public_entries = server.admin(
        "GET",
        "/permissions?filter[role][_null]=true&filter[collection][_eq]=entries"
        "&filter[action][_eq]=read",
    )[0]
    server.admin(  # personal data made public
        "PATCH",
        f"/permissions/{public_entries['id']}",
        {"fields": [*public_entries["fields"], "device"]},
    )
    server.admin("PATCH", f"/flows/{officials_intent().id}", {"status": "inactive"})
    other_token = secrets.token_urlsafe(24)  # the dispatcher's token rotated
    try:
        planned = apply_access(server, other_token, dry_run=True).plan
        got = {(c.kind, c.name, c.change, c.detail) for c in planned.changes}
        assert got == {
            ("permission", "Race control: update penalties", "create", _detail(planned, "create")),
            ("permission", "Timekeeper: delete events", "delete", "not declared"),
            ("permission", "Public: read entries", "update", "fields -device"),
            ("flow", officials_intent().name, "update", "status"),
            ("user", "Processor dispatcher", "update", "token"),
        }
        apply_access(server, other_token)
        assert apply_access(server, other_token).plan.changes == []
        status, _ = server.request("GET", "/items/processor_events?fields=id", token=other_token)
        assert status == 200
        status, _ = server.request(
            "GET", "/items/processor_events?fields=id", token=site.dispatcher_token
        )
        assert status == 401
    finally:
        apply_access(server, site.dispatcher_token)
    assert apply_access(server, site.dispatcher_token).plan.changes == []


def _detail(plan: Any, change: str) -> str:
    """The detail the plan gives the one permission it creates (its field count)."""
    (detail,) = {c.detail for c in plan.changes if c.kind == "permission" and c.change == change}
    assert "fields" in detail
    return str(detail)


# -- roles -------------------------------------------------------------------------------------


def test_race_control_waives_a_penalty_and_cannot_delete_configuration(site: Site) -> None:
    server, token = site.server, site.race_control
    penalty = site.rows["penalty_a"]
    status, body = server.request(
        "PATCH",
        f"/items/penalties/{penalty}",
        {"status": "cancelled", "note": "waived by the stewards, decision 12"},
        token,
    )
    assert status == 200, body
    assert _row(site, "penalties", "penalty_a", "status", "source") == ("cancelled", "manual")

    for collection, key in (
        ("stages", 1),
        ("events", 1),
        ("geofences", 1),
        ("entries", 1),
        ("devices", 1),
    ):
        status, _ = server.request("DELETE", f"/items/{collection}/{key}", token=token)
        assert status == 403, collection
    assert _sql(server, "SELECT count(*) FROM public.stages WHERE id = 1") == [(1,)]
    # An automatic row cannot be deleted either (the processor would write it again).
    status, _ = server.request("DELETE", f"/items/penalties/{site.rows['penalty_b']}", token=token)
    assert status == 403

    # A stage's status and times, yes; its route or geofences, no.
    status, _ = server.request("PATCH", "/items/stages/3", {"status": "neutralized"}, token)
    assert status == 200
    status, _ = server.request("PATCH", "/items/stages/3", {"route": None}, token)
    assert status == 403
    status, _ = server.request("PATCH", "/items/geofences/1", {"name": "moved"}, token)
    assert status == 403

    # A manual row typed by mistake can be deleted; the Studio reads everything.
    status, body = server.request(
        "POST",
        "/items/timing_records",
        {
            "stage": 1,
            "entry": 7,
            "geofence": 1,
            "kind": "finish_line",
            "crossed_at": "2026-05-01T06:20:00.000Z",
        },
        token,
    )
    assert status == 200, body
    assert (body["data"]["source"], body["data"]["key"]) == ("manual", None)
    status, _ = server.request("DELETE", f"/items/timing_records/{body['data']['id']}", token=token)
    assert status == 204
    for collection in ("devices", "io_mappings", "processor_events", "stage_results"):
        status, _ = server.request("GET", f"/items/{collection}?limit=1", token=token)
        assert status == 200, collection


def test_race_control_cannot_forge_the_processors_keys(site: Site) -> None:
    server, token = site.server, site.race_control
    status, _ = server.request(
        "POST",
        "/items/penalties",
        {"stage": 1, "entry": 6, "kind": "other", "amount_ms": 5000, "source": "auto"},
        token,
    )
    assert status == 403  # a new official row is manual: `source` is the preset's
    status, _ = server.request(
        "PATCH", f"/items/penalties/{site.rows['penalty_c']}", {"key": "auto:forged"}, token
    )
    assert status == 403


def test_the_timekeeper_enters_times_and_waives_penalties_only(site: Site) -> None:
    server, token = site.server, site.timekeeper
    status, body = server.request(
        "POST",
        "/items/timing_records",
        {
            "stage": 2,
            "entry": 4,
            "geofence": 1,
            "kind": "start_line",
            "crossed_at": "2026-05-01T07:00:00.100Z",
            "note": "control card",
        },
        token,
    )
    assert status == 200, body
    assert body["data"]["source"] == "manual"
    status, body = server.request(
        "PATCH", f"/items/penalties/{site.rows['penalty_d']}", {"status": "cancelled"}, token
    )
    assert status == 200, body
    assert _row(site, "penalties", "penalty_d", "status", "source") == ("cancelled", "manual")

    refused = [
        ("PATCH", f"/items/timing_records/{site.rows['finish_c']}", {"status": "rejected"}),
        ("PATCH", f"/items/stage_results/{site.rows['result_public']}", {"rank": 2}),
        ("PATCH", f"/items/alerts/{site.rows['alert_warning']}", {"status": "acknowledged"}),
        ("PATCH", "/items/stages/1", {"status": "cancelled"}),
        ("DELETE", f"/items/penalties/{site.rows['penalty_d']}", None),
        ("DELETE", "/items/stages/1", None),
        ("GET", "/items/devices", None),
    ]
    for method, path, body in refused:
        status, _ = server.request(method, path, body, token)
        assert status == 403, (method, path)


def test_the_public_reads_published_results_only(site: Site) -> None:
    server = site.server
    status, body = server.request("GET", "/items/stage_results?fields=*&limit=-1")
    assert status == 200, body
    ids = {r["id"] for r in body["data"]}
    assert site.rows["result_public"] in ids
    assert site.rows["result_private"] not in ids
    assert set(body["data"][0]) == {
        "id",
        "stage",
        "entry",
        "start_at",
        "finish_at",
        "elapsed_ms",
        "penalty_ms",
        "total_ms",
        "status",
        "rank",
        "class_rank",
        "gap_leader_ms",
        "gap_ahead_ms",
        "splits",
        "updated_at",
    }  # no key, source or steward's note
    status, _ = server.request("GET", f"/items/stage_results/{site.rows['result_private']}")
    assert status == 403

    status, body = server.request("GET", "/items/events?fields=id,name")
    assert status == 200
    assert [e["id"] for e in body["data"]] == [1]
    status, body = server.request("GET", "/items/entries?fields=*&limit=-1")
    assert status == 200
    assert len(body["data"]) == 20  # the private event's crew is not listed
    assert set(body["data"][0]) == {"id", "event", "number", "crew_name", "class", "status"}
    # A classification: results with car number, crew and stage name, in one request.
    status, body = server.request(
        "GET", "/items/stage_results?fields=rank,total_ms,entry.number,entry.crew_name,stage.name"
    )
    assert status == 200, body
    assert body["data"][0]["entry"]["number"] == 101

    for path in (
        "/items/devices",
        "/items/entries?fields=device",
        "/items/entries?filter[device][imei][_nnull]=true",
        "/items/stages?fields=route",
        "/items/events?fields=rules",
        "/items/geofences",
        "/items/penalties",
        "/items/alerts",
        "/items/timing_records",
        "/items/processor_events",
        "/items/stage_results?fields=note",
    ):
        status, _ = server.request("GET", path)
        assert status == 403, path
    # Directus strips a forbidden relation from `fields` rather than refusing: no IMEI out.
    imeis = {d["imei"] for d in json.loads(SAMPLE_EVENT.read_text())["devices"]}
    for path in (
        "/items/entries?fields=device.imei",
        "/items/entries?fields=*.*.*",
        "/items/stage_results?fields=entry.device.*",
    ):
        status, body = server.request("GET", path)
        assert status in (200, 403), path
        assert not [i for i in imeis if i in json.dumps(body)], path


def test_the_dispatcher_creates_processor_events_only(site: Site) -> None:
    server, token = site.server, site.dispatcher_token
    event = {
        "event_key": f"penalty:test:{secrets.token_hex(4)}",
        "kind": "penalty.created",
        "payload": {"collection": "penalties", "change": "created", "id": 1, "key": "k"},
    }
    status, body = server.request("POST", "/items/processor_events?fields=id", event, token)
    assert status == 200, body
    assert isinstance(body["data"]["id"], int)
    status, body = server.request("POST", "/items/processor_events", event, token)
    assert status == 400
    assert body["errors"][0]["extensions"]["code"] == "RECORD_NOT_UNIQUE"

    for method, path in (
        ("GET", "/items/stage_results"),
        ("GET", "/items/processor_events?fields=payload"),
        ("GET", "/users"),
        ("DELETE", "/items/processor_events/1"),
        ("PATCH", "/items/processor_events/1"),
    ):
        status, _ = server.request(
            method, path, {"kind": "x"} if method == "PATCH" else None, token
        )
        assert status == 403, (method, path)
    me = server.admin("GET", f"/users/{DISPATCHER_USER.id}?fields=role,status")
    assert me == {"role": DISPATCHER.id, "status": "active"}
    role = server.admin("GET", f"/roles/{DISPATCHER.id}?fields=app_access,admin_access")
    assert role == {"app_access": False, "admin_access": False}


# -- the officials'-intent Flow ----------------------------------------------------------------


def test_an_officials_edit_makes_an_automatic_row_manual(site: Site) -> None:
    """The issue's case: `status = rejected` on an automatic finish, in the Studio's request
    shape (PATCH of the edited fields only, with a login's access token)."""
    server, token = site.server, site.race_control
    status, body = server.request(
        "PATCH", f"/items/timing_records/{site.rows['finish_a']}", {"status": "rejected"}, token
    )
    assert status == 200, body
    assert body["data"]["source"] == "manual"
    assert _row(site, "timing_records", "finish_a", "status", "source") == ("rejected", "manual")

    # A batch update (keys), and an array of items (one update per item).
    status, body = server.request(
        "PATCH",
        "/items/timing_records",
        {"keys": [site.rows["finish_b"], site.rows["finish_c"]], "data": {"note": "photo cell"}},
        token,
    )
    assert status == 200, body
    sources = _sql(
        server,
        "SELECT source FROM public.timing_records WHERE id = ANY(%s)",
        [site.rows["finish_b"], site.rows["finish_c"]],
    )
    assert sources == [("manual",), ("manual",)]
    status, body = server.request(
        "PATCH",
        "/items/stage_results",
        [{"id": site.rows["result_public"], "status": "dnf"}],
        token,
    )
    assert status == 200, body
    assert _row(site, "stage_results", "result_public", "status", "source") == ("dnf", "manual")

    # An explicit source is the official's choice: `auto` hands the row back to the processor.
    status, body = server.request(
        "PATCH", f"/items/stage_results/{site.rows['result_public']}", {"source": "auto"}, token
    )
    assert status == 200, body
    assert _row(site, "stage_results", "result_public", "source") == ("auto",)


def test_an_edit_in_the_studio_makes_the_row_manual(site: Site) -> None:
    """The Studio itself (headless Chromium, logged in as race control): a note typed on an
    automatic penalty and saved makes it the officials' row."""
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (set PROCESSOR_CHROMIUM)")
    pytest.importorskip("playwright.async_api", reason="playwright (python) is not installed")
    asyncio.run(_edit_in_the_studio(site))
    assert _row(site, "penalties", "penalty_studio", "note", "source") == (
        "Waived in the Studio",
        "manual",
    )


async def _edit_in_the_studio(site: Site) -> None:
    from playwright.async_api import async_playwright

    base = site.server.base_url
    email, password = site.race_control_login
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = await browser.new_page()
            await page.goto(f"{base}/admin/login")
            await page.fill("input[type=email]", email)
            await page.fill("input[type=password]", password)
            await page.click("button[type=submit]")
            await page.wait_for_url(re.compile(r"/admin/content"), timeout=60_000)
            await page.goto(f"{base}/admin/content/penalties/{site.rows['penalty_studio']}")
            note = page.locator("textarea[field=note]")  # the form's input-multiline
            await note.wait_for(timeout=30_000)
            await note.fill("Waived in the Studio")
            async with page.expect_response(
                lambda r: r.request.method == "PATCH" and "/items/penalties/" in r.url
            ) as saved:
                await page.keyboard.press("Control+s")  # the Studio's "save and stay"
            response = await saved.value
            assert response.status == 200, await response.text()
            # What the Studio sent: the edited field only, no `source`.
            assert json.loads(response.request.post_data or "{}") == {
                "note": "Waived in the Studio"
            }
        finally:
            await browser.close()


def test_working_an_alert_keeps_it_automatic(site: Site) -> None:
    server, token = site.server, site.race_control
    status, body = server.request(
        "PATCH",
        f"/items/alerts/{site.rows['alert_work']}",
        {"status": "acknowledged", "note": "marshal on site"},
        token,
    )
    assert status == 200, body
    assert _row(site, "alerts", "alert_work", "status", "source") == ("acknowledged", "auto")
    status, body = server.request(
        "PATCH", f"/items/alerts/{site.rows['alert_edit']}", {"severity": "info"}, token
    )
    assert status == 200, body
    assert _row(site, "alerts", "alert_edit", "severity", "source") == ("info", "manual")


def test_the_processor_writing_with_sql_stays_automatic(site: Site) -> None:
    _sql(
        site.server,
        "UPDATE public.penalties SET amount_ms = 20000 WHERE id = %s",
        site.rows["penalty_b"],
    )
    assert _row(site, "penalties", "penalty_b", "amount_ms", "source") == (20000, "auto")


# -- the example Flow: a critical alert notifies race control -----------------------------------


def _event(site: Site, alert: str, kind: str = "alert.created") -> dict[str, Any]:
    """What the dispatcher delivers for a change of an alert row."""
    row = _sql(
        site.server,
        "SELECT row_to_json(a)::text FROM public.alerts a WHERE id = %s",
        site.rows[alert],
    )[0][0]
    return {
        "event_key": f"alert:{alert}:{kind}:{secrets.token_hex(4)}",
        "kind": kind,
        "payload": {
            "collection": "alerts",
            "change": kind.split(".")[1],
            "id": site.rows[alert],
            "key": f"auto:{alert}",
            "version": 1,
            "data": json.loads(row),
        },
    }


def _flow_runs(site: Site) -> int:
    rows = _sql(
        site.server,
        "SELECT count(*) FROM directus_activity WHERE collection = 'directus_flows'"
        " AND action = 'run' AND item = %s",
        critical_alert().id,
    )
    return int(rows[0][0])


def test_a_critical_alert_notifies_race_control_once(site: Site) -> None:
    server = site.server
    runs = _flow_runs(site)
    batch = [  # one request, as the dispatcher sends a round
        _event(site, "alert_warning"),  # not critical: no notification
        _event(site, "alert_critical"),
    ]
    status, body = server.request(
        "POST", "/items/processor_events?fields=id", batch, site.dispatcher_token
    )
    assert status == 200, body
    wait_until(lambda: _flow_runs(site) >= runs + 2, 30)
    # The same alert again (escalated, or any later update): no second notification.
    again = _event(site, "alert_critical", "alert.updated")
    status, body = server.request("POST", "/items/processor_events", again, site.dispatcher_token)
    assert status == 200, body
    wait_until(lambda: _flow_runs(site) >= runs + 3, 30)

    status, body = server.request(
        "GET",
        "/notifications?fields=subject,message,collection,item,recipient",
        token=site.race_control,
    )
    assert status == 200, body
    mine = [n for n in body["data"] if n["collection"] == "alerts"]
    assert [n["item"] for n in mine] == [str(site.rows["alert_critical"])], mine
    assert mine[0]["recipient"] == site.race_control_id
    assert mine[0]["subject"].startswith("Critical alert: stopped — car 105")
    assert "SS1" in mine[0]["subject"]


def test_roles_and_flows_survive_a_directus_restart(site: Site) -> None:
    """They live in Directus's tables: a restart (on the same port) loads them again."""
    server = site.server
    port = server.port
    server.stop()
    with pytest.raises(urllib.error.URLError, match="refused"):
        server.request("GET", "/server/health")
    server.start()
    assert server.port == port
    status, body = server.request(
        "PATCH",
        f"/items/penalties/{site.rows['penalty_c']}",
        {"reason": "restart"},
        site.race_control,
    )
    assert status == 200, body
    assert _row(site, "penalties", "penalty_c", "source") == ("manual",)
    assert apply_access(server, site.dispatcher_token).plan.changes == []

"""`processor replay` / `processor recompute` against live processing: replay equals live,
a moved split line re-times exactly its records (dry run writes nothing, a real run
converges), manual records are never touched, and positions are never written."""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from processor.core.settings import Settings
from processor.domain.projection import LocalProjection
from processor.domain_runner import (
    alerts,
    fast_path,
    fixes,
    full_path,
    outputs,
    race,
    recompute,
    store,
    timing_records,
)
from processor.domain_runner.recompute import (
    ReplayReport,
    load_snapshot,
    recompute_stage,
    replay_device,
)
from processor.tools import replay as replay_module
from processor.tools.event_loader import load_event_rows, read_event_file
from processor.tools.simulator.event import load_event
from processor.tools.simulator.generator import GeneratorConfig, Simulation
from tests.integration.outbox_checks import assert_outbox_matches_rows
from tests.integration.test_domain_timing import feed

pytestmark = pytest.mark.integration

DEVICES = 3
STAGES = (1, 2, 3)
SPLIT = 3  # "SS1 split 1", a forward split line on stage 1
MOVE_M = 8.0  # along the road: every car crosses it a little later


async def all_records(db: asyncpg.Connection) -> list[tuple[Any, ...]]:
    """Every timing record, every column that matters, in a stable order."""
    rows = await db.fetch(
        "SELECT key, stage, entry, geofence, kind, source, status, crossed_at,"
        " fix_before_at, fix_after_at, details::text AS details, note"
        " FROM public.timing_records ORDER BY id"
    )
    return [tuple(r.values()) for r in rows]


async def positions_state(db: asyncpg.Connection) -> tuple[int, Any]:
    row = await db.fetchrow("SELECT count(*), max(ts) FROM telemetry.positions")
    assert row is not None
    return row[0], row[1]


def moved_gate(geometry: dict[str, Any], metres: float) -> dict[str, Any]:
    """The gate shifted `metres` in its forward direction (the line rotated 90° CCW)."""
    (lon0, lat0), (lon1, lat1) = geometry["coordinates"][:2]
    proj = LocalProjection(lat0, lon0)
    (ax, ay), (bx, by) = proj.to_xy(lon0, lat0), proj.to_xy(lon1, lat1)
    length = math.hypot(bx - ax, by - ay)
    fx, fy = -(by - ay) / length, (bx - ax) / length
    return {
        "type": "LineString",
        "coordinates": [
            list(proj.to_lonlat(x + metres * fx, y + metres * fy)) for x, y in ((ax, ay), (bx, by))
        ],
    }


async def move_split_in_directus(db: asyncpg.Connection, metres: float) -> None:
    """What an official does in Directus Studio: edit the geofence row's geometry."""
    geometry = json.loads(
        await db.fetchval("SELECT geometry::text FROM public.geofences WHERE id = $1", SPLIT)
    )
    await db.execute(
        "UPDATE public.geofences SET geometry = $2::text::json WHERE id = $1",
        SPLIT,
        json.dumps(moved_gate(geometry, metres)),
    )


async def cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    """`processor <args>` in a child process, as an operator runs it."""
    env = {
        "PROCESSOR_DATABASE_URL": settings.database_url.get_secret_value(),
        "PROCESSOR_REDIS_URL": settings.redis_url.get_secret_value(),
        "PROCESSOR_LOG_FORMAT": "json",
        "PROCESSOR_LOG_LEVEL": "WARNING",
        "COLUMNS": "160",
        "PATH": "/usr/bin:/bin",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "processor",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def live(
    settings: Settings, redis_client: aioredis.Redis, db: asyncpg.Connection
) -> AsyncIterator[asyncpg.Connection]:
    """The sample event loaded, a 3-car simulator run stored and timed by the live stage.

    The event rows are loaded again afterwards: tests here edit a geofence, and the
    database is shared by the whole run.
    """
    await db.execute(
        "TRUNCATE public.timing_records, telemetry.outbox, telemetry.position_attributes,"
        " telemetry.domain_outputs, telemetry.domain_progress"
    )
    await load_event_rows(db, read_event_file())
    simulation = Simulation(load_event(), GeneratorConfig(devices=DEVICES, seed=3))
    await feed(settings, redis_client, list(simulation.entries()))
    assert await db.fetchval("SELECT count(*) FROM public.timing_records") > 0
    try:
        yield db
    finally:
        await load_event_rows(db, read_event_file())
        await db.execute("DELETE FROM public.timing_records WHERE source = 'manual'")


async def dry_run_all(db: asyncpg.Connection) -> list[ReplayReport]:
    snapshot = await load_snapshot(db)
    return [await recompute_stage(db, snapshot, stage, dry_run=True) for stage in STAGES]


async def test_recompute_right_after_live_processing_finds_no_difference(
    settings: Settings, live: asyncpg.Connection
) -> None:
    records = await all_records(live)
    reports = await dry_run_all(live)
    assert [r.changes for r in reports] == [[], [], []]
    assert [r.alerts for r in reports] == [[], [], []]  # the alerts too: live equals replay
    # Every live record was recomputed (and found identical) by exactly one stage's range.
    assert sum(r.unchanged for r in reports) == len(records)

    # Per device over the whole day, in one-hour chunks: the same records again.
    snapshot = await load_snapshot(live)
    devices = {
        r["imei"]
        for r in await live.fetch(
            "SELECT DISTINCT d.imei FROM public.timing_records t"
            " JOIN public.entries e ON e.id = t.entry JOIN public.devices d ON d.id = e.device"
        )
    }
    assert len(devices) == DEVICES
    day = (1_777_593_600_000, 1_777_680_000_000)  # 2026-05-01 UTC
    unchanged = 0
    for device in sorted(devices):
        report = await replay_device(live, snapshot, device, day, dry_run=True)
        assert report.changes == []
        assert report.alerts == []
        unchanged += report.unchanged
    assert unchanged == len(records)

    code, out, _ = await cli(settings, "recompute", "--stage", "2", "--dry-run")
    assert code == 0
    assert "0 added, 0 removed, 0 re-timed, 0 updated" in out
    assert "dry run: nothing written" in out
    assert await all_records(live) == records


async def test_moved_split_line_is_retimed_by_recompute(
    settings: Settings, live: asyncpg.Connection, tmp_path: Path
) -> None:
    before = await all_records(live)
    ids = {r["key"]: r["id"] for r in await live.fetch("SELECT key, id FROM public.timing_records")}
    outbox = await live.fetchval("SELECT count(*) FROM telemetry.outbox")

    # The same edit as a what-if file first (Directus unchanged) ...
    doc = read_event_file()
    for fence in doc["geofences"]:
        if fence["id"] == SPLIT:
            fence["geometry"] = moved_gate(fence["geometry"], MOVE_M)
    layout = tmp_path / "moved-split.json"
    layout.write_text(json.dumps(doc))
    what_if = await recompute_stage(live, await load_snapshot(live, layout), 1, dry_run=True)

    # ... then for real in the Directus table.
    await move_split_in_directus(live, MOVE_M)
    code, out, err = await cli(settings, "recompute", "--stage", "1", "--dry-run")
    assert code == 0, err
    print(out)
    planned = await recompute_stage(live, await load_snapshot(live), 1, dry_run=True)
    assert planned.changes == what_if.changes
    assert len(planned.changes) == DEVICES  # one split crossing per car, nothing else
    for change in planned.changes:
        assert (change.change, change.geofence, change.kind) == ("re-timed", SPLIT, "split_line")
        assert change.delta_ms is not None
        # 8 m further along the road at rally speed: later, by well under a second.
        assert 0 < change.delta_ms < 1000
    assert out.count("re-timed │") == DEVICES
    assert f"0 added, 0 removed, {DEVICES} re-timed" in out
    # The dry runs wrote nothing: same rows, same values, no outbox event.
    assert await all_records(live) == before
    assert await live.fetchval("SELECT count(*) FROM telemetry.outbox") == outbox

    # A what-if layout is never written.
    code, _, err = await cli(settings, "recompute", "--stage", "1", "--geofences", str(layout))
    assert code == 2
    assert "needs --dry-run" in err

    code, out, err = await cli(settings, "recompute", "--stage", "1")
    assert code == 0, err
    assert f"{DEVICES} re-timed" in out
    assert "written" in out
    after = {r[0]: r for r in await all_records(live)}
    for change in planned.changes:
        row = after[change.key]
        assert round(row[7].timestamp() * 1000) == change.new_ms
    changed_keys = {c.key for c in planned.changes} | {c.old_key for c in planned.changes}
    assert {k: r for k, r in after.items() if k not in changed_keys} == {
        r[0]: r for r in before if r[0] not in changed_keys
    }
    # A re-timed crossing keeps its row (its Directus id), re-cut between other fixes
    # (a new key) or not; a re-cut's old key announces where it went.
    ids_after = {
        r["key"]: r["id"] for r in await live.fetch("SELECT key, id FROM public.timing_records")
    }
    recut = {c.old_key: c.key for c in planned.changes if c.old_key and c.old_key != c.key}
    for change in planned.changes:
        assert ids_after[change.key] == ids[change.old_key or change.key]
    moved = await live.fetch(
        "SELECT row_key, payload->>'renamed_to' AS new FROM telemetry.outbox"
        " WHERE change = 'deleted' AND row_key = ANY($1::text[])",
        list(recut),
    )
    assert {r["row_key"]: r["new"] for r in moved} == recut
    # Every change went to the outbox with it, as the live stage does: each row's last
    # event is its state, each old key's is its deletion.
    # (timing records: this module's other tables may hold rows of earlier modules)
    assert await assert_outbox_matches_rows(live, ("timing_records",)) >= len(after)

    reports = await dry_run_all(live)
    assert [r.changes for r in reports] == [[], [], []]


async def test_manual_records_are_never_touched(live: asyncpg.Connection) -> None:
    # An official corrects one automatic split record by hand (it becomes manual) and
    # adds a crossing the trackers missed. (Entry 1: its split crossing stays on the same
    # fix segment after the move below, so the planned record has the manual row's key.)
    corrected = await live.fetchrow(
        "UPDATE public.timing_records SET source = 'manual',"
        " crossed_at = crossed_at + interval '500 milliseconds', note = 'photo cell'"
        " WHERE geofence = $1 AND entry = 1 RETURNING key, entry",
        SPLIT,
    )
    assert corrected is not None
    await live.execute(
        "INSERT INTO public.timing_records (stage, entry, geofence, kind, crossed_at, source)"
        " SELECT stage, entry, geofence, kind, crossed_at + interval '1 second', 'manual'"
        " FROM public.timing_records WHERE source = 'auto' AND kind = 'finish_line' LIMIT 1"
    )
    manual_before = await live.fetch(
        "SELECT * FROM public.timing_records WHERE source = 'manual' ORDER BY id"
    )
    assert len(manual_before) == 2

    await move_split_in_directus(live, MOVE_M)
    snapshot = await load_snapshot(live)
    planned = await recompute_stage(live, snapshot, 1, dry_run=True)
    # The corrected record's crossing moved too, but it is manual: not a change. The
    # official's added finish supersedes that entry's automatic finish (ADR 0004).
    assert corrected["key"] not in {c.key for c in planned.changes}
    superseded = [c for c in planned.changes if c.kind == "finish_line"]
    assert [c.change for c in superseded] == ["updated"]
    assert len(planned.changes) == DEVICES - 1 + 1
    assert planned.manual == 2

    written = await recompute_stage(live, snapshot, 1, dry_run=False)
    assert written.changes == planned.changes
    for stage in STAGES:
        await recompute_stage(live, snapshot, stage, dry_run=False)
    manual_after = await live.fetch(
        "SELECT * FROM public.timing_records WHERE source = 'manual' ORDER BY id"
    )
    assert [dict(r) for r in manual_after] == [dict(r) for r in manual_before]
    status = await live.fetchval(
        "SELECT status FROM public.timing_records WHERE key = $1", superseded[0].key
    )
    assert status == "superseded"


async def test_positions_are_never_written(settings: Settings, live: asyncpg.Connection) -> None:
    # Nothing in the code path can write them ...
    code_path = (
        replay_module,
        recompute,
        outputs,
        fast_path,
        full_path,
        timing_records,
        alerts,
        race,
        store,
        fixes,
    )
    for module in code_path:
        source = inspect.getsource(module)
        assert not re.search(
            r"(INSERT\s+INTO|UPDATE|DELETE\s+FROM|TRUNCATE|COPY)\s+telemetry\.positions",
            source,
            re.IGNORECASE,
        ), module.__name__
    # ... and the database refuses any write while the tools run.
    state = await positions_state(live)
    await live.execute(
        """
        CREATE FUNCTION telemetry.test_refuse_writes() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN RAISE EXCEPTION 'telemetry.positions written by %', TG_OP; END $$;
        CREATE TRIGGER test_refuse_writes BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE
        ON telemetry.positions FOR EACH STATEMENT EXECUTE FUNCTION telemetry.test_refuse_writes();
        """
    )
    try:
        await move_split_in_directus(live, MOVE_M)
        code, out, err = await cli(settings, "recompute", "--stage", "1")
        assert code == 0, err
        assert f"{DEVICES} re-timed" in out
        device = await live.fetchval("SELECT min(device_id) FROM telemetry.positions")
        code, out, err = await cli(
            settings,
            "replay",
            "--device",
            device,
            "--since",
            "2026-05-01T00:00:00Z",
            "--until",
            "2026-05-02T00:00:00Z",
        )
        assert code == 0, err
        assert "0 re-timed" in out
    finally:
        await live.execute(
            "DROP TRIGGER test_refuse_writes ON telemetry.positions;"
            " DROP FUNCTION telemetry.test_refuse_writes()"
        )
    assert await positions_state(live) == state


async def test_bad_requests_are_refused_with_a_reason(
    settings: Settings, live: asyncpg.Connection
) -> None:
    code, _, err = await cli(settings, "recompute", "--stage", "99", "--dry-run")
    assert (code, err.strip()) == (1, "no stage 99 in the configuration")
    code, _, err = await cli(
        settings,
        "replay",
        "--device",
        "000000000000000",
        "--since",
        "2026-05-01T00:00:00Z",
        "--until",
        "2026-05-02T00:00:00Z",
        "--dry-run",
    )
    assert code == 1
    assert "carries no entry" in err
    device = await live.fetchval("SELECT min(device_id) FROM telemetry.positions")
    code, _, err = await cli(
        settings,
        "replay",
        "--device",
        device,
        "--entry",
        "999",
        "--since",
        "2026-05-01T00:00:00Z",
        "--until",
        "2026-05-02T00:00:00Z",
        "--dry-run",
    )
    assert (code, err.strip()) == (1, f"entry 999 is not carried by device {device}")
    code, _, err = await cli(
        settings,
        "replay",
        "--device",
        "x",
        "--since",
        "yesterday",
        "--until",
        "2026-05-02T00:00:00Z",
    )
    assert code == 2
    assert "--since" in err

"""Decoded attributes end to end, and `processor backfill attributes` (issue 17).

A mapping corrected in the middle of an event, then a backfill, gives exactly the rows a
fresh run with the corrected mapping writes; the backfill never touches positions,
resumes from its checkpoint, removes rows whose model lost its mappings, and a dry run
writes nothing. The shipped mappings load idempotently and never overwrite an edit.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis

from processor.core.settings import Settings
from processor.domain_runner.attribute_audit import AttributeAudit
from processor.domain_runner.backfill import Backfill, BackfillError, Scope, Tally
from processor.tools.mappings import load_shipped, upgrade
from tests.conftest import ADMIN_URL, REDIS_URL
from tests.entries import BASE_MS
from tests.integration.attribute_scenario import (
    IBUTTON,
    MODEL,
    RIGHT,
    WRONG,
    add_devices,
    attributes,
    records,
    run_domain,
    scratch_databases,
    set_mappings,
    settings_for,
)
from tests.integration.test_pipeline import add_all, counter, drain

pytestmark = pytest.mark.integration

DEVICES = [f"AT{n:02d}" for n in range(4)]
_decode = msgspec.json.Decoder(dict[str, object], float_hook=Decimal).decode


async def _positions_checksum(conn: asyncpg.Connection) -> tuple[int, str]:
    row = await conn.fetchrow(
        "SELECT count(*) AS n, md5(string_agg(device_id || ts::text || io::text || stream_id,"
        " ',' ORDER BY device_id, ts)) AS h FROM telemetry.positions"
    )
    assert row is not None
    return int(row["n"]), str(row["h"])


async def test_a_mapping_corrected_mid_event_then_backfilled_equals_a_fresh_run(
    settings: Settings, redis_client: aioredis.Redis, stream_prefix: str
) -> None:
    first, second = range(150), range(150, 300)
    async with scratch_databases(2) as (live_url, fresh_url):
        live = settings_for(settings, live_url, f"{stream_prefix}:live")
        fresh = settings_for(settings, fresh_url, f"{stream_prefix}:fresh")
        conn = await asyncpg.connect(live_url)
        other = await asyncpg.connect(fresh_url)
        try:
            # The event runs with the mapping as first typed in the Studio ...
            await add_devices(conn, DEVICES)
            await set_mappings(conn, WRONG)
            await add_all(redis_client, live.stream, records(DEVICES, BASE_MS, first))
            await drain(live)
            await run_domain(live)
            # ... an official corrects it half-way; the event goes on.
            await set_mappings(conn, RIGHT)
            await add_all(redis_client, live.stream, records(DEVICES, BASE_MS, second))
            await drain(live)
            metrics = await run_domain(live)
            # The live stage counted the GNSS status without a label (one in five records).
            assert counter(metrics, "processor_attribute_values_unfit", type="enum",
                           reason="unknown_label") == 4 * 30  # fmt: skip

            before = {(d, t): _decode(a) for d, t, a, _ in await attributes(conn)}
            early = before[(DEVICES[0], BASE_MS + 1000)]
            assert early["axis_x"] == 65535  # the signed axis read as unsigned
            assert early["ibutton"] == IBUTTON  # exact, but a number
            assert "dtc" not in early
            late = before[(DEVICES[0], BASE_MS + 151_000)]
            assert late["axis_x"] == -151
            assert late["ibutton"] == "01000b00791c1793"
            positions = await _positions_checksum(conn)

            dry = await Backfill(conn, Scope(model=MODEL), dry_run=True, samples=3).run()
            assert dry.tally.scanned == 4 * 300
            assert dry.tally.updated == 4 * 150  # the first half only
            assert dry.tally.unchanged == 4 * 150
            assert dry.tally.added == dry.tally.deleted == 0
            assert [s.ts_ms for s in dry.tally.samples] == [BASE_MS, BASE_MS + 1000, BASE_MS + 2000]
            assert dry.tally.samples[1].old is not None
            assert dry.tally.samples[1].old["axis_x"] == 65535
            assert dry.tally.samples[1].new is not None
            assert dry.tally.samples[1].new["axis_x"] == -1
            assert {(d, t): _decode(a) for d, t, a, _ in await attributes(conn)} == before

            done = await Backfill(conn, Scope(model=MODEL), rate=0, batch=64).run()
            assert done.finished
            assert (done.tally.updated, done.tally.unchanged) == (4 * 150, 4 * 150)
            assert await _positions_checksum(conn) == positions  # positions untouched

            # A fresh run: the corrected mapping from the start, the same records.
            await add_devices(other, DEVICES)
            await set_mappings(other, RIGHT)
            await add_all(redis_client, fresh.stream, records(DEVICES, BASE_MS, range(300)))
            await drain(fresh)
            await run_domain(fresh)
            expected = await attributes(other)
            assert len(expected) == 4 * 300
            assert await attributes(conn) == expected
            row = _decode(expected[1][2])
            assert row == {
                "ignition": True,
                "axis_x": -1,
                "external_voltage": Decimal("12.001"),
                "ibutton": "01000b00791c1793",
                "dtc": "P0299,P0101",
                "gnss_status": "fix",
                "dallas_1": Decimal("-25.1"),
            }
            # Running it again finds nothing to do.
            again = await Backfill(conn, Scope(model=MODEL), rate=0).run()
            assert (again.tally.written, again.tally.unchanged) == (0, 4 * 300)
        finally:
            await conn.close()
            await other.close()


async def _loaded(url: str, seconds: int = 120) -> asyncpg.Connection:
    """Positions stored directly (the backfill reads only the table), mapped as RIGHT."""
    conn = await asyncpg.connect(url)
    await add_devices(conn, DEVICES)
    await set_mappings(conn, RIGHT)
    await conn.execute(
        "INSERT INTO telemetry.positions (device_id, ts, received_at, latitude, longitude,"
        " fix_valid, io, stream_id)"
        " SELECT d, to_timestamp(($2::bigint + s * 1000) / 1000.0), now(), 54.6, 25.2, true,"
        " jsonb_build_object('17', 65536 - s, '239', s % 2, '78', $3::bigint + s), '0-1'"
        " FROM unnest($1::text[]) d, generate_series(1, $4) s",
        DEVICES,
        BASE_MS,
        IBUTTON,
        seconds,
    )
    return conn


async def test_an_interrupted_backfill_resumes_and_ends_as_an_uninterrupted_one() -> None:
    async with scratch_databases(2) as (a_url, b_url):
        a, b = await _loaded(a_url), await _loaded(b_url)
        try:
            whole = await Backfill(b, Scope(), rate=0, batch=25).run()
            assert whole.finished
            assert whole.tally.added == 4 * 120

            stop = asyncio.Event()
            pages = 0

            def after_page(_: Tally, __: int) -> None:
                nonlocal pages
                pages += 1
                if pages == 7:
                    stop.set()

            cut = await Backfill(
                a, Scope(), rate=0, batch=25, on_progress=after_page, stop=stop
            ).run()
            assert cut.interrupted
            assert not cut.finished
            # Pages of 25 per device: 120 = 4 × 25 + 20, so 7 pages = one device and two pages.
            written = 120 + 2 * 25
            assert await a.fetchval("SELECT count(*) FROM telemetry.position_attributes") == written
            checkpoint = await a.fetchrow("SELECT * FROM telemetry.backfill_checkpoints")
            assert checkpoint is not None
            assert (checkpoint["scanned"], checkpoint["finished_at"]) == (written, None)
            assert (checkpoint["device_id"], checkpoint["ts_ms"]) == (DEVICES[1], BASE_MS + 50_000)

            resumed = await Backfill(a, Scope(), rate=0, batch=25).run()
            assert resumed.resumed_from is not None
            assert resumed.finished
            assert resumed.tally.scanned == 4 * 120  # the earlier part counted once
            assert await attributes(a) == await attributes(b)

            # --if-changed: nothing to do until a mapping changes.
            idle = await Backfill(a, Scope(), rate=0, if_changed=True).run()
            assert idle.up_to_date
            await a.execute(
                "UPDATE public.io_mappings SET type = 'unsigned', width = 2 WHERE io_id = 17"
            )
            redo = await Backfill(a, Scope(), rate=0, if_changed=True).run()
            assert not redo.up_to_date
            assert redo.tally.updated == 4 * 120
            axis = await a.fetchval(
                "SELECT attributes->'axis_x' FROM telemetry.position_attributes"
                " WHERE device_id = $1 ORDER BY ts LIMIT 1",
                DEVICES[0],
            )
            assert axis == "65535"
        finally:
            await a.close()
            await b.close()


async def test_a_checkpoint_from_before_a_mapping_edit_is_not_resumed() -> None:
    async with scratch_databases(1) as (url,):
        conn = await _loaded(url, seconds=50)
        try:
            stop = asyncio.Event()
            await Backfill(
                conn, Scope(), rate=0, batch=10, on_progress=lambda _, __: stop.set(), stop=stop
            ).run()
            await conn.execute("UPDATE public.io_mappings SET name = 'x_axis' WHERE io_id = 17")
            again = await Backfill(conn, Scope(), rate=0, batch=10).run()
            assert again.restarted_because is not None
            assert again.resumed_from is None
            names = await conn.fetch(
                "SELECT DISTINCT jsonb_object_keys(attributes) AS k"
                " FROM telemetry.position_attributes ORDER BY 1"
            )
            assert [r["k"] for r in names] == ["ibutton", "ignition", "x_axis"]
        finally:
            await conn.close()


async def test_scope_by_device_and_time_and_rows_without_a_mapping_removed() -> None:
    async with scratch_databases(1) as (url,):
        conn = await _loaded(url, seconds=60)
        try:
            since, until = BASE_MS + 10_000, BASE_MS + 20_000  # seconds 10..19
            part = await Backfill(
                conn,
                Scope(devices=(DEVICES[1],), since_ms=since, until_ms=until),
                rate=0,
            ).run()
            assert part.tally.added == 10
            rows = await attributes(conn)
            assert {(d, t) for d, t, _, _ in rows} == {
                (DEVICES[1], BASE_MS + s * 1000) for s in range(10, 20)
            }
            await Backfill(conn, Scope(model=MODEL), rate=0).run()
            assert len(await attributes(conn)) == 4 * 60
            # The model loses its mappings: a fresh run would write no row for it.
            await conn.execute("DELETE FROM public.io_mappings WHERE model = $1", MODEL)
            gone = await Backfill(conn, Scope(model=MODEL), rate=0).run()
            assert gone.tally.deleted == 4 * 60
            assert await attributes(conn) == []
            # A model without devices, or no device at all: nothing to do.
            nothing = await Backfill(conn, Scope(model="FMX000"), rate=0).run()
            assert (nothing.plan.total, nothing.finished) == (0, True)
        finally:
            await conn.close()


async def test_unfit_values_are_counted_in_the_backfill_too() -> None:
    async with scratch_databases(1) as (url,):
        conn = await _loaded(url, seconds=20)
        try:
            await conn.execute("UPDATE public.io_mappings SET width = 1 WHERE io_id = 17")
            audit = AttributeAudit()
            outcome = await Backfill(conn, Scope(), rate=0, audit=audit).run()
            assert outcome.tally.unfit == 4 * 20  # 65536 - s does not fit one byte
            assert audit.total == 4 * 20
            assert {reason for (_, reason) in audit.counts} == {"out_of_range"}
            has_axis = await conn.fetchval(
                "SELECT count(*) FROM telemetry.position_attributes WHERE attributes ? 'axis_x'"
            )
            assert has_axis == 0
        finally:
            await conn.close()


async def test_the_same_backfill_twice_at_once_is_refused() -> None:
    async with scratch_databases(1) as (url,):
        conn = await _loaded(url, seconds=5)
        holder = await asyncpg.connect(url)
        try:
            await holder.execute(
                "SELECT pg_advisory_lock(hashtextextended($1, 0))",
                f"processor:backfill:{Scope().job}",
            )
            with pytest.raises(BackfillError, match="running already"):
                await Backfill(conn, Scope(), rate=0).run()
        finally:
            await holder.close()
            await conn.close()


DAY_MS = 86_400_000


async def _three_days(url: str) -> asyncpg.Connection:
    """Positions over three days, 40 days ago (one chunk a day), mapped as WRONG."""
    conn = await asyncpg.connect(url)
    await add_devices(conn, DEVICES)
    await set_mappings(conn, WRONG)
    start = (BASE_MS - 40 * DAY_MS) // DAY_MS * DAY_MS
    await conn.execute(
        "INSERT INTO telemetry.positions (device_id, ts, received_at, latitude, longitude,"
        " fix_valid, io, stream_id)"
        " SELECT d, to_timestamp(($2::bigint + s * 600000) / 1000.0), now(), 54.6, 25.2, true,"
        " jsonb_build_object('17', 65536 - s, '239', s % 2, '78', $3::bigint + s), '0-1'"
        " FROM unnest($1::text[]) d, generate_series(0, 3 * 144 - 1) s",
        DEVICES,
        start,
        IBUTTON,
    )
    return conn


@pytest.mark.usefixtures("needs_timescale")
async def test_on_timescaledb_chunk_by_chunk_compressed_chunks_included() -> None:
    async with scratch_databases(2) as (url, plain_url):
        conn, reference = await _three_days(url), await _three_days(plain_url)
        try:
            first = await Backfill(conn, Scope(), rate=0).run()
            assert first.plan.mode == "timescale"
            assert first.tally.added == 4 * 432
            for table in ("positions", "position_attributes"):
                await conn.execute(
                    f"SELECT compress_chunk(c) FROM show_chunks('telemetry.{table}') c"
                )
            positions = await _positions_checksum(conn)
            # The mapping is corrected; the history is compressed.
            await set_mappings(conn, RIGHT)
            plan_dry = await Backfill(conn, Scope(), dry_run=True).run()
            units = plan_dry.plan.units
            assert len(units) == 3
            assert all(u.compressed for u in units)
            assert plan_dry.tally.updated == 4 * 432
            done = await Backfill(conn, Scope(), rate=0, batch=50).run()
            assert done.finished
            assert done.tally.updated == 4 * 432
            assert await _positions_checksum(conn) == positions
            # The same as the corrected mapping from the start, never compressed.
            await set_mappings(reference, RIGHT)
            await Backfill(reference, Scope(), rate=0).run()
            assert await attributes(conn) == await attributes(reference)
            axis = await conn.fetchval(
                "SELECT attributes->>'axis_x' FROM telemetry.position_attributes"
                " WHERE device_id = $1 ORDER BY ts OFFSET 1 LIMIT 1",
                DEVICES[0],
            )
            assert axis == "-1"
        finally:
            await conn.close()
            await reference.close()


async def test_shipped_mappings_load_once_and_never_overwrite_an_edit() -> None:
    async with scratch_databases(1) as (url,):
        conn = await asyncpg.connect(url)
        try:
            first = await load_shipped(conn, "FMB920")
            assert len(first.added) > 40
            assert (first.unchanged, first.kept) == ([], [])
            count = await conn.fetchval("SELECT count(*) FROM public.io_mappings")
            again = await load_shipped(conn, "FMB920")
            assert again.added == []
            assert len(again.unchanged) == len(first.added)
            assert await conn.fetchval("SELECT count(*) FROM public.io_mappings") == count
            # An official edits a row in the Studio: the next load leaves it alone.
            await conn.execute(
                "UPDATE public.io_mappings SET multiplier = 0.01"
                " WHERE model = 'FMB920' AND io_id = 66"
            )
            await conn.execute(
                "DELETE FROM public.io_mappings WHERE model = 'FMB920' AND io_id = 239"
            )
            third = await load_shipped(conn, "FMB920")
            assert [m.io_id for m in third.added] == [239]  # a deleted row comes back
            assert [k.shipped.io_id for k in third.kept] == [66]
            assert "multiplier" in third.kept[0].differences[0]
            multiplier = await conn.fetchval(
                "SELECT multiplier FROM public.io_mappings WHERE model = 'FMB920' AND io_id = 66"
            )
            assert multiplier == Decimal("0.01")
            dry = await load_shipped(conn, "FMC130", dry_run=True)
            assert len(dry.added) > 50
            assert await conn.fetchval("SELECT count(*) FROM public.io_mappings") == count
            # The rows decode as the shipped file says, through the live loader.
            labels = await conn.fetchval(
                "SELECT labels::text FROM public.io_mappings WHERE model = 'FMB920' AND io_id = 69"
            )
            assert _decode(labels)["1"] == "GNSS on with fix"
        finally:
            await conn.close()


async def test_upgrade_rewrites_the_first_vocabulary() -> None:
    async with scratch_databases(1) as (url,):
        conn = await asyncpg.connect(url)
        try:
            await conn.executemany(
                "INSERT INTO public.io_mappings (model, io_id, name, type, multiplier)"
                " VALUES ($1, $2, $3, $4, $5)",
                [
                    ("*", 239, "ignition", "bool", Decimal(1)),
                    ("*", 66, "volts", "float", Decimal("0.001")),
                    ("*", 16, "odometer", "int", Decimal(1)),
                    ("*", 17, "axis_x", "signed", Decimal(1)),  # width from the shipped table
                    ("*", 4000, "mystery", "signed", Decimal(1)),  # no shipped width
                    ("*", 240, "movement", "boolean", None),  # already current
                ],
            )
            planned = await upgrade(conn, dry_run=True)
            assert len(planned) == 5
            assert (
                await conn.fetchval(
                    "SELECT count(*) FROM public.io_mappings WHERE type IN ('bool', 'float', 'int')"
                )
                == 3
            )
            done = await upgrade(conn)
            rows = {
                r["io_id"]: (r["type"], r["width"], r["multiplier"])
                for r in await conn.fetch(
                    "SELECT io_id, type, width, multiplier FROM public.io_mappings"
                )
            }
            assert rows == {
                239: ("boolean", None, None),
                66: ("unsigned", None, Decimal("0.001000000")),
                16: ("unsigned", None, None),
                17: ("signed", 2, None),
                4000: ("signed", None, None),
                240: ("boolean", None, None),
            }
            assert [c.row_id for c in done if c.problem] == [5]  # an official must give a width
            assert await upgrade(conn) == [
                c for c in await upgrade(conn, dry_run=True) if c.row_id == 5
            ]
        finally:
            await conn.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_backfill_bench_runs_and_writes_its_figures(tmp_path: Path) -> None:
    """`processor backfill bench`, small: it cannot rot between the runs that measure
    (its figures are not judged here)."""
    output = tmp_path / "backfill.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROCESSOR_")}
    env |= {"PROCESSOR_DATABASE_URL": ADMIN_URL, "PROCESSOR_REDIS_URL": REDIS_URL}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "processor",
            "backfill",
            "bench",
            *("--positions", "3000", "--devices", "30", "--core-entries", "3000"),
            *("--repeats", "1", "--output", str(output)),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads(output.read_text())["figures"]
    assert figures["history_positions"] == 3000
    assert set(figures["backfill_positions_per_s"]) == {"first", "corrected", "unchanged"}
    assert len(figures["core_alone_positions_per_s"]) == 1
    assert len(figures["core_beside_backfill_positions_per_s"]) == 1
    assert figures["backfill_beside_core_positions_per_s"][0] > 0

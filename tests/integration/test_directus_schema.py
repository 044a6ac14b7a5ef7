"""The Directus schema: the SQL fixture creates exactly what Directus creates from the snapshot.

A real Directus (the version pinned in directus/package-lock.json, installed by
scripts/directus.sh into a cache folder outside the repo) bootstraps a scratch database and
applies directus/snapshot.yaml; the fixture is applied to a second scratch database; the
catalogues of both are compared. The same Directus then serves the sample event over REST.

Skipped only when Node.js is missing, or when PROCESSOR_SKIP_DIRECTUS=1. A failed install
(npm registry unreachable) fails the test. A cold install takes a few minutes; later runs on
the same machine reuse the cache.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration.directus_server import (
    DIRECTUS_TIMEOUT_S,
    DirectusServer,
    SnapshotDatabase,
    create_database,
    drop_database,
    request,
    snapshot_database,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_EVENT = ROOT / "src" / "processor" / "tools" / "simulator" / "data" / "sample-event.json"
COLLECTIONS = (
    "events",
    "devices",
    "entries",
    "stages",
    "geofences",
    "io_mappings",
    "timing_records",
    "stage_results",
    "alerts",
    "penalties",
    "processor_events",
)
Row = tuple[Any, ...]


def fixture_sql() -> str:
    return (resources.files("processor.storage") / "directus_fixture.sql").read_text()


@pytest.fixture(scope="module")
def fixture_db() -> Iterator[str]:
    """A scratch database with only the SQL fixture applied."""
    name, url = create_database("processor_dxfix")
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(fixture_sql().encode())
        yield url
    finally:
        drop_database(name)


@pytest.fixture(scope="module")
def directus() -> Iterator[SnapshotDatabase]:
    """A scratch database bootstrapped by a real Directus, with the snapshot applied."""
    with snapshot_database() as db:
        yield db


def _get(url: str, token: str | None = None) -> tuple[int, Any]:
    return request("GET", url, None, token)


def _request(method: str, url: str, body: Any, token: str | None) -> tuple[int, Any]:
    return request(method, url, body, token)


@pytest.fixture(scope="module")
def server(
    directus: SnapshotDatabase, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DirectusServer]:
    """The Directus server on 127.0.0.1 over the snapshot database; stopped afterwards."""
    log_path = tmp_path_factory.mktemp("directus") / "server.log"
    running = DirectusServer(directus.url, directus.admin_token, log_path)
    try:
        running.start()
        yield running
    finally:
        running.stop()


# -- the catalogue of the collection tables ----------------------------------------------------

_CAST = re.compile(r"^'(?P<literal>.*)'::[a-z ]+$")
_NULL = re.compile(r"^NULL(::[a-z ]+)?$")


def _default(value: str | None) -> str | None:
    """Directus writes `DEFAULT NULL::character varying` and `'1'::numeric`; SQL `1`."""
    if value is None or _NULL.match(value):
        return None
    cast = _CAST.match(value)
    return cast.group("literal") if cast else value


def _catalogue(url: str) -> dict[str, list[Row]]:
    with psycopg.connect(url) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                """SELECT table_name FROM information_schema.tables
                   WHERE table_schema = 'public' AND table_name NOT LIKE 'directus\\_%'
                   ORDER BY table_name"""
            )
        ]
        columns = [
            (*r[:-1], _default(r[-1]))
            for r in conn.execute(
                """SELECT table_name, column_name, ordinal_position, data_type, udt_name,
                          character_maximum_length, numeric_precision, numeric_scale,
                          datetime_precision, is_nullable, column_default
                   FROM information_schema.columns
                   WHERE table_schema = 'public' AND table_name = ANY(%s)
                   ORDER BY table_name, ordinal_position""",
                (tables,),
            )
        ]
        constraints = conn.execute(
            """SELECT cl.relname, c.conname, c.contype,
                      ARRAY(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(num, i)
                            JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.num
                            ORDER BY k.i)::text[],
                      COALESCE(ref.relname, ''),
                      ARRAY(SELECT a.attname FROM unnest(c.confkey) WITH ORDINALITY k(num, i)
                            JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.num
                            ORDER BY k.i)::text[],
                      c.confupdtype, c.confdeltype
               FROM pg_constraint c
               JOIN pg_class cl ON cl.oid = c.conrelid
               JOIN pg_namespace n ON n.oid = cl.relnamespace
               LEFT JOIN pg_class ref ON ref.oid = c.confrelid
               WHERE n.nspname = 'public' AND cl.relname = ANY(%s)
               ORDER BY cl.relname, c.conname""",
            (tables,),
        ).fetchall()
        indexes = conn.execute(
            """SELECT tablename, indexname, indexdef FROM pg_indexes
               WHERE schemaname = 'public' AND tablename = ANY(%s)
               ORDER BY tablename, indexname""",
            (tables,),
        ).fetchall()
    return {
        "tables": [(t,) for t in tables],
        "columns": columns,
        "constraints": [
            tuple(tuple(v) if isinstance(v, list) else v for v in r) for r in constraints
        ],
        "indexes": [tuple(r) for r in indexes],
    }


def _differences(directus: list[Row], fixture: list[Row]) -> str:
    only_directus = sorted(set(directus) - set(fixture), key=repr)
    only_fixture = sorted(set(fixture) - set(directus), key=repr)
    lines = [f"  Directus only: {row}" for row in only_directus]
    lines += [f"  fixture only:  {row}" for row in only_fixture]
    return "\n".join(lines)


# -- tests ---------------------------------------------------------------------------------------


def test_fixture_creates_the_collection_tables(fixture_db: str) -> None:
    """Runs without Directus: the fixture applies cleanly and creates only the collections."""
    catalogue = _catalogue(fixture_db)
    assert sorted(t for (t,) in catalogue["tables"]) == sorted(COLLECTIONS)


@pytest.mark.timeout(DIRECTUS_TIMEOUT_S)
def test_fixture_matches_what_directus_creates(directus: SnapshotDatabase, fixture_db: str) -> None:
    expected = _catalogue(directus.url)
    actual = _catalogue(fixture_db)
    assert sorted(t for (t,) in expected["tables"]) == sorted(COLLECTIONS)
    problems = {
        part: diff
        for part in ("tables", "columns", "constraints", "indexes")
        if (diff := _differences(expected[part], actual[part]))
    }
    report = "\n".join(f"{part}:\n{diff}" for part, diff in problems.items())
    assert not problems, f"directus_fixture.sql differs from the applied snapshot:\n{report}"


def _load_sample_event_sql(conn: psycopg.Connection[Row]) -> None:
    """The sample event's rows, inserted with their ids (the shape the domain reads)."""
    doc = json.loads(SAMPLE_EVENT.read_text())
    for collection in ("events", "devices", "stages", "geofences", "entries"):
        for row in doc[collection]:
            values = {k: json.dumps(v) if isinstance(v, dict) else v for k, v in row.items()}
            names = ", ".join(f'"{k}"' for k in values)
            marks = ", ".join(["%s"] * len(values))
            conn.execute(
                f"INSERT INTO public.{collection} ({names}) VALUES ({marks})",
                list(values.values()),
            )


UPSERT = """
INSERT INTO public.timing_records AS t
    (key, stage, entry, geofence, kind, ordinal, crossed_at, source, updated_at)
VALUES (%s, 1, 1, 1, 'start_line', 0, %s, 'auto', now())
ON CONFLICT (key) DO UPDATE
    SET crossed_at = EXCLUDED.crossed_at, updated_at = EXCLUDED.updated_at
    WHERE t.source <> 'manual'
"""


def test_fixture_holds_the_sample_event_and_keeps_manual_rows(fixture_db: str) -> None:
    with psycopg.connect(fixture_db) as conn:
        try:
            _load_sample_event_sql(conn)
            counts = {
                c: conn.execute(f"SELECT count(*) FROM public.{c}").fetchone()
                for c in ("stages", "geofences", "entries")
            }
            assert counts == {"stages": (3,), "geofences": (21,), "entries": (20,)}
            route = conn.execute("SELECT route::text FROM public.stages WHERE id = 1").fetchone()
            assert route is not None
            assert json.loads(route[0])["type"] == "LineString"

            key = "auto:1:1:1777615259000:1777615260000:0"
            conn.execute(UPSERT, (key, "2026-05-01T06:01:00.123Z"))
            conn.execute(UPSERT, (key, "2026-05-01T06:01:00.456Z"))  # replay converges
            crossed = "SELECT to_char(crossed_at AT TIME ZONE 'UTC', 'HH24:MI:SS.MS'), source"
            where = " FROM public.timing_records WHERE key = %s"
            assert conn.execute(crossed + where, (key,)).fetchall() == [("06:01:00.456", "auto")]

            # An official corrects the time: the row turns manual and the processor leaves it.
            conn.execute(
                "UPDATE public.timing_records SET crossed_at = %s, source = 'manual'"
                " WHERE key = %s",
                ("2026-05-01T06:01:00.000Z", key),
            )
            conn.execute(UPSERT, (key, "2026-05-01T06:01:00.789Z"))
            assert conn.execute(crossed + where, (key,)).fetchall() == [("06:01:00.000", "manual")]
            # A row typed in without a source is manual; several rows may have no key.
            for _ in range(2):
                conn.execute(
                    "INSERT INTO public.timing_records (stage, entry, geofence, kind, crossed_at)"
                    " VALUES (1, 2, 1, 'start_line', '2026-05-01T06:02:00Z')"
                )
            sources = conn.execute(
                "SELECT source, count(*) FROM public.timing_records WHERE key IS NULL GROUP BY 1"
            ).fetchall()
            assert sources == [("manual", 2)]
        finally:
            conn.rollback()


@pytest.mark.timeout(DIRECTUS_TIMEOUT_S)
def test_directus_serves_the_sample_event(server: DirectusServer) -> None:
    base, token = server.base_url, server.admin_token
    doc = json.loads(SAMPLE_EVENT.read_text())
    for collection in ("events", "devices", "stages", "geofences", "entries"):
        status, body = _request("POST", f"{base}/items/{collection}", doc[collection], token)
        assert status == 200, (collection, body)
        assert len(body["data"]) == len(doc[collection])

    status, body = _get(f"{base}/items/stages/1?fields=route", token)
    assert status == 200
    assert body["data"]["route"] == doc["stages"][0]["route"]
    waypoint = next(g for g in doc["geofences"] if g["kind"] == "waypoint")
    status, body = _get(f"{base}/items/geofences/{waypoint['id']}", token)
    assert status == 200
    assert body["data"]["geometry"] == waypoint["geometry"]
    assert body["data"]["radius_m"] == waypoint["radius_m"]

    record = {
        "key": "auto:1:1:1777615259000:1777615260000:0",
        "stage": 1,
        "entry": 1,
        "geofence": 1,
        "kind": "start_line",
        "crossed_at": "2026-05-01T06:01:00.123Z",
        "source": "auto",
    }
    status, body = _request("POST", f"{base}/items/timing_records", record, token)
    assert status == 200, body
    assert body["data"]["crossed_at"] == "2026-05-01T06:01:00.123Z"  # milliseconds kept

    # A timing record an official types into the Studio: no key, manual by default.
    manual: dict[str, Any] = {
        "stage": 1,
        "entry": 1,
        "geofence": 1,
        "kind": "start_line",
        "crossed_at": "2026-05-01T06:01:00.000Z",
    }
    status, body = _request("POST", f"{base}/items/timing_records", manual, token)
    assert status == 200, body
    assert (body["data"]["key"], body["data"]["source"]) == (None, "manual")

    # The outbox dispatcher's idempotency: a second delivery of one event_key is refused.
    event: dict[str, Any] = {
        "event_key": "timing_record:auto:1:1:1777615259000:1777615260000:0:created:06:01:00.123",
        "kind": "timing_record.created",
        "payload": {"key": "auto:1:1:1777615259000:1777615260000:0"},
    }
    status, body = _request("POST", f"{base}/items/processor_events", event, token)
    assert status == 200, body
    assert body["data"]["created_at"]
    status, body = _request("POST", f"{base}/items/processor_events", event, token)
    assert status == 400
    assert body["errors"][0]["extensions"]["code"] == "RECORD_NOT_UNIQUE"


@pytest.mark.timeout(DIRECTUS_TIMEOUT_S)
def test_io_mappings_typed_in_the_studio_decode_exactly(server: DirectusServer) -> None:
    """ADR 0013's fields over REST, as the Studio writes them: the row the processor
    reads back is valid and decodes exactly (issue 17)."""
    from decimal import Decimal

    from processor.domain.attributes import decode_value, load_mappings

    base, token = server.base_url, server.admin_token
    rows = [
        {"model": "FMB920", "io_id": 17, "name": "axis_x", "type": "signed", "width": 2},
        {"model": "FMB920", "io_id": 66, "name": "external_voltage", "type": "unsigned",
         "width": 2, "multiplier": "0.001", "unit": "V"},
        {"model": "FMB920", "io_id": 69, "name": "gnss_status", "type": "enum", "width": 1,
         "labels": {"0": "GNSS off", "1": "GNSS on with fix"}},
        {"model": "FMB920", "io_id": 239, "name": "ignition", "type": "boolean"},
    ]  # fmt: skip
    status, body = _request("POST", f"{base}/items/io_mappings", rows, token)
    assert status == 200, body
    status, body = _get(f"{base}/items/io_mappings?sort=id&limit=-1", token)
    assert status == 200, body
    stored = body["data"]
    assert stored[2]["labels"] == {"0": "GNSS off", "1": "GNSS on with fix"}
    assert stored[3]["multiplier"] is None  # no default of 1 any more
    table, errors = load_mappings(stored)
    assert errors == []
    by_io = table.for_model("FMB920")
    assert decode_value(65509, by_io["17"]) == -27
    assert decode_value(12845, by_io["66"]) == Decimal("12.845")
    assert decode_value(1, by_io["69"]) == "GNSS on with fix"
    assert decode_value(1, by_io["239"]) is True

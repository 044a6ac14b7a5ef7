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
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import ADMIN_URL, _with_database

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "directus.sh"
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
# Cold install (npm ci, compiling isolated-vm) + bootstrap + apply + server start.
DIRECTUS_TIMEOUT_S = 900
INSTALL_TIMEOUT_S = 780

Row = tuple[Any, ...]


def fixture_sql() -> str:
    return (resources.files("processor.storage") / "directus_fixture.sql").read_text()


@dataclass(frozen=True)
class Directus:
    database_url: str
    admin_token: str


@dataclass(frozen=True)
class Server:
    base_url: str
    admin_token: str


def _create_database(prefix: str) -> tuple[str, str]:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return name, _with_database(ADMIN_URL, name)


def _drop_database(name: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def fixture_db() -> Iterator[str]:
    """A scratch database with only the SQL fixture applied."""
    name, url = _create_database("processor_dxfix")
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(fixture_sql().encode())
        yield url
    finally:
        _drop_database(name)


def _require_node() -> None:
    if os.environ.get("PROCESSOR_SKIP_DIRECTUS") == "1":
        pytest.skip("PROCESSOR_SKIP_DIRECTUS=1: the real-Directus schema check is skipped")
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed: cannot run Directus")


def _script_env(admin_token: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DIRECTUS_ADMIN_EMAIL=f"admin-{secrets.token_hex(4)}@example.com",
        DIRECTUS_ADMIN_PASSWORD=secrets.token_urlsafe(18),
        DIRECTUS_ADMIN_TOKEN=admin_token,
        DIRECTUS_KEY=secrets.token_hex(16),
        DIRECTUS_SECRET=secrets.token_hex(32),
    )
    return env


@pytest.fixture(scope="module")
def directus() -> Iterator[Directus]:
    """A scratch database bootstrapped by a real Directus, with the snapshot applied."""
    _require_node()
    token = secrets.token_urlsafe(24)
    name, url = _create_database("processor_dx")
    try:
        try:
            done = subprocess.run(
                ["bash", str(SCRIPT), "apply", url],
                env=_script_env(token),
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"scripts/directus.sh apply took over {exc.timeout} s")
        if done.returncode != 0:
            pytest.fail(
                "scripts/directus.sh apply failed (set PROCESSOR_SKIP_DIRECTUS=1 to skip this "
                f"check where the npm registry is unreachable):\n{done.stderr[-4000:]}"
            )
        yield Directus(url, token)
    finally:
        _drop_database(name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _get(url: str, token: str | None = None) -> tuple[int, Any]:
    return _request("GET", url, None, token)


def _request(method: str, url: str, body: Any, token: str | None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read() or b"null")


@pytest.fixture(scope="module")
def server(directus: Directus, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The Directus server on 127.0.0.1 over the snapshot database; stopped afterwards."""
    port = _free_port()
    env = _script_env(directus.admin_token)
    env.update(DIRECTUS_PORT=str(port), DIRECTUS_LOG_LEVEL="warn")
    log_path = tmp_path_factory.mktemp("directus") / "server.log"
    base = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            ["bash", str(SCRIPT), "cli", directus.database_url, "start"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"Directus exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                status, _ = _get(f"{base}/server/health")
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"Directus did not answer in 120 s:\n{log_path.read_text()}")
            time.sleep(0.5)
        yield Server(base, directus.admin_token)
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)


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
def test_fixture_matches_what_directus_creates(directus: Directus, fixture_db: str) -> None:
    expected = _catalogue(directus.database_url)
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
def test_directus_serves_the_sample_event(server: Server) -> None:
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

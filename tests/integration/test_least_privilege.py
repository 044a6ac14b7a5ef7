"""The processor works with least privilege: the deploy/ role in PostgreSQL and the
deploy/ ACL user in Redis, each tested for real."""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest
import redis
from pydantic import SecretStr

from processor.core.settings import Settings
from tests.conftest import ADMIN_URL, REDIS_URL, _with_database
from tests.entries import BASE_MS, bad_entry, entry
from tests.integration.test_pipeline import drain

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ROLE_SQL = ROOT / "deploy" / "sql" / "processor-role.sql"
ACL_CONF = ROOT / "deploy" / "redis-acl.conf"
FIXTURE_SQL = ROOT / "src" / "processor" / "storage" / "directus_fixture.sql"


@pytest.fixture
def scratch_db() -> Iterator[str]:
    name = f"processor_priv_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.skipif(shutil.which("psql") is None, reason="psql (PostgreSQL client) not installed")
def test_pipeline_runs_as_the_least_privilege_role(
    scratch_db: str, settings: Settings, stream_prefix: str
) -> None:
    admin_url = _with_database(ADMIN_URL, scratch_db)
    if FIXTURE_SQL.exists():  # the Directus tables the role is granted on
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(FIXTURE_SQL.read_text())
    password = secrets.token_urlsafe(24)
    done = subprocess.run(
        [
            "psql",
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            f"processor_password={password}",
            "-d",
            admin_url,
            "-f",
            str(ROLE_SQL),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert password not in done.stdout + done.stderr
    role_url = admin_url.replace("postgres@", f"processor:{password}@", 1)
    as_role = settings.model_copy(update={"database_url": SecretStr(role_url)})

    client = redis.Redis.from_url(REDIS_URL)
    try:
        for fields in [entry("PRIV", BASE_MS + i * 1000) for i in range(50)] + [bad_entry("json")]:
            client.xadd(as_role.stream, fields)  # type: ignore[arg-type]

        async def run_and_check() -> None:
            from processor.storage.migrate import migrate

            conn = await asyncpg.connect(role_url)
            try:
                assert await conn.fetchval("SELECT current_user") == "processor"
                await migrate(conn, as_role)
                await drain(as_role)
                assert await conn.fetchval("SELECT count(*) FROM telemetry.positions") == 50
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute("CREATE TABLE public.not_allowed (x int)")
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute("CREATE SCHEMA not_allowed")
                if FIXTURE_SQL.exists():
                    await conn.fetch("SELECT * FROM public.events LIMIT 1")
            finally:
                await conn.close()

        asyncio.run(run_and_check())
    finally:
        keys = list(client.scan_iter(match=f"{stream_prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


def _acl_rules(key_prefix: str, password: str, server_version: str) -> list[str]:
    line = next(ln for ln in ACL_CONF.read_text().splitlines() if ln.startswith("user processor "))
    rules = line.split()[2:]
    out = []
    for rule in rules:
        if rule.startswith("#"):
            out.append(f">{password}")
        elif rule.startswith("~"):
            out.append(f"~{key_prefix}*")
        elif rule == "+client|setinfo" and tuple(map(int, server_version.split(".")[:2])) < (7, 2):
            continue  # CLIENT SETINFO exists from Redis 7.2 (the ACL file says so)
        else:
            out.append(rule)
    return out


def test_pipeline_and_dead_letter_tools_run_as_the_redis_acl_user(
    settings: Settings, stream_prefix: str
) -> None:
    admin = redis.Redis.from_url(REDIS_URL)
    user = f"processor-test-{uuid.uuid4().hex[:8]}"
    password = secrets.token_urlsafe(24)
    info: Any = admin.info("server")
    admin.execute_command(
        "ACL", "SETUSER", user, "reset", *_acl_rules(stream_prefix, password, info["redis_version"])
    )  # type: ignore[no-untyped-call]
    acl_url = re.sub(r"^redis://", f"redis://{user}:{password}@", REDIS_URL)
    as_user = settings.model_copy(update={"redis_url": SecretStr(acl_url)})
    try:
        for fields in [entry("ACL", BASE_MS + i * 1000) for i in range(30)] + [
            bad_entry("version")
        ]:
            admin.xadd(as_user.stream, fields)  # type: ignore[arg-type]

        async def run() -> None:
            from processor.stream.client import connect
            from processor.tools.dlq import list_dead_letters, requeue

            await drain(as_user)
            client = connect(as_user)
            try:
                views = await list_dead_letters(client, as_user.dlq_stream)
                assert [v.reason for v in views] == ["unsupported_version"]
                assert await requeue(client, as_user.dlq_stream, as_user.stream) == 1
                # Anything outside its keys is refused.
                with pytest.raises(redis.exceptions.NoPermissionError):
                    await client.xadd("elsewhere:stream", {b"x": b"1"})
            finally:
                await client.aclose()

        asyncio.run(run())
        log: Any = admin.execute_command("ACL", "LOG")  # type: ignore[no-untyped-call]
        refused = [
            e for e in log if (e.get(b"username") or e.get("username")) in (user, user.encode())
        ]
        objects = {(e.get(b"object") or e.get("object")) for e in refused}
        # The only refusal is the deliberate one: the processor's own work needed nothing
        # beyond the ACL in deploy/.
        assert objects == {b"elsewhere:stream"}, f"unexpected refusals: {refused}"
    finally:
        admin.execute_command("ACL", "DELUSER", user)  # type: ignore[no-untyped-call]
        keys = list(admin.scan_iter(match=f"{stream_prefix}*"))
        if keys:
            admin.delete(*keys)
        admin.close()

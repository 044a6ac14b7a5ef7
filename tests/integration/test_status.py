"""`processor status` against a drained stream, and with a store that is down."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import socket
import time

import asyncpg
import pytest
import redis
import redis.asyncio as aioredis
from rich.console import Console
from typer.testing import CliRunner

from processor.app import open_pipeline
from processor.cli import app
from processor.core.settings import Settings, load_settings
from processor.tools.status import StatusSnapshot, gather_status, render
from tests.conftest import REDIS_URL
from tests.entries import bad_entry, entry
from tests.integration.test_pipeline import add_all

pytestmark = pytest.mark.integration

# Newest position per device, relative to now: one device in each freshness bucket.
AGES_S = {"FRESH": (1, 2), "MINUTE": (30,), "TENMIN": (300,), "OLD": (3600,)}
BAD_KINDS = ("version", "json", "json", "missing")


def _entries(now_ms: int) -> list[dict[bytes, bytes]]:
    good = [entry(d, now_ms - age * 1000) for d, ages in AGES_S.items() for age in ages]
    return good + [bad_entry(kind) for kind in BAD_KINDS]


async def _drain(settings: Settings) -> None:
    async with open_pipeline(settings) as pipeline:
        assert await asyncio.wait_for(pipeline.run(until_idle=True), 60)


def _text(snapshot: StatusSnapshot) -> str:
    console = Console(record=True, width=120, file=io.StringIO())
    console.print(render(snapshot))
    return console.export_text()


def _closed_port() -> int:
    """A port nothing listens on: bound by us a moment ago, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _use_in_environment(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `processor status` reads: these stores and keys, nothing else from outside."""
    for key in [k for k in os.environ if k.startswith("PROCESSOR_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PROCESSOR_DATABASE_URL", settings.database_url.get_secret_value())
    monkeypatch.setenv("PROCESSOR_REDIS_URL", settings.redis_url.get_secret_value())
    monkeypatch.setenv("PROCESSOR_STREAM", settings.stream)
    monkeypatch.setenv("PROCESSOR_GROUP", settings.group)
    monkeypatch.setenv("PROCESSOR_LOG_FORMAT", "json")


def _with(settings: Settings, **overrides: str) -> Settings:
    fields = settings.model_dump()
    fields.update(overrides)
    return load_settings(**fields)


async def test_status_after_draining_a_mixed_stream(
    settings: Settings, redis_client: aioredis.Redis, db: asyncpg.Connection
) -> None:
    await add_all(redis_client, settings.stream, _entries(int(time.time() * 1000)))
    await _drain(settings)

    snapshot = await gather_status(settings)

    assert snapshot.ok, (snapshot.redis_error, snapshot.database_error)
    assert snapshot.redis is not None
    assert snapshot.redis.stream_length == 9
    assert snapshot.redis.dead_letters == {
        "malformed_json": 2,
        "missing_field": 1,
        "unsupported_version": 1,
    }
    assert snapshot.redis.dlq_length == 4
    group = snapshot.redis.group
    assert group is not None
    assert (group.pending, group.lag, group.entries_read) == (0, 0, 9)
    assert [(c.name, c.pending) for c in group.consumers] == [("test-consumer", 0)]
    database = snapshot.database
    assert database is not None
    assert database.errors == []
    fresh = database.freshness
    assert fresh is not None
    assert (fresh.devices, fresh.capped) == (4, False)
    assert (fresh.under_10s, fresh.under_1m, fresh.under_10m, fresh.older) == (1, 1, 1, 1)
    assert database.per_second_gps == pytest.approx(3 / 60)  # FRESH ×2, MINUTE
    assert database.newest_age_s is not None
    assert 0.5 < database.newest_age_s < 10
    stored = await db.fetchval("SELECT count(*) FROM telemetry.positions")
    assert stored == 5

    text = _text(snapshot)
    assert re.search(r"stream length\s+9\b", text)
    assert re.search(r"pending\s+0\b", text)
    assert re.search(r"group lag\s+0\b", text)
    for reason, count in (("malformed_json", 2), ("missing_field", 1), ("unsupported_version", 1)):
        assert f"{reason} {count} " in text
    assert re.search(r"dead letters\s+4 in ", text)
    assert re.search(r"devices\s+4\b", text)
    for label in ("< 10 s", "10 s – 1 min", "1 – 10 min", "older"):
        assert f"{label}: 1 " in text
    assert "test-consumer" in text


async def test_unreachable_database_is_reported_not_raised(
    settings: Settings, redis_client: aioredis.Redis
) -> None:
    port = _closed_port()
    broken = _with(settings, database_url=f"postgresql://postgres@127.0.0.1:{port}/nothing")

    snapshot = await gather_status(broken)

    assert snapshot.database is None
    assert snapshot.database_error is not None
    assert f"127.0.0.1:{port}" in snapshot.database_error
    assert snapshot.redis is not None  # the other store is still shown
    assert snapshot.redis.stream_length == 0
    assert not snapshot.ok
    assert "error: PostgreSQL at" in _text(snapshot)


async def test_unreachable_redis_is_reported_not_raised(settings: Settings) -> None:
    port = _closed_port()
    broken = _with(settings, redis_url=f"redis://127.0.0.1:{port}/0")

    snapshot = await gather_status(broken)

    assert snapshot.redis is None
    assert snapshot.redis_error is not None
    assert str(port) in snapshot.redis_error
    assert snapshot.database is not None
    assert "error: Redis at" in _text(snapshot)


def test_cli_prints_the_snapshot_as_json(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        for kind in ("version", "missing"):
            client.xadd(settings.stream, bad_entry(kind))  # type: ignore[arg-type]
        asyncio.run(_drain(settings))
        _use_in_environment(settings, monkeypatch)

        result = CliRunner().invoke(app, ["status", "--json"])

        assert result.exit_code == 0, result.output
        doc = json.loads(result.output)
        assert doc["stream"] == settings.stream
        assert doc["redis"]["stream_length"] == 2
        assert doc["redis"]["dead_letters"] == {"missing_field": 1, "unsupported_version": 1}
        assert doc["redis"]["group"]["pending"] == 0
        assert doc["database_error"] is None
    finally:
        keys = list(client.scan_iter(match=f"{settings.stream}*"))
        if keys:
            client.delete(*keys)
        client.close()

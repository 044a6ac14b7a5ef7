"""`processor dlq list|show|requeue` against real dead letters."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
import redis
import redis.asyncio as aioredis
from typer.testing import CliRunner

from processor.cli import app
from processor.core.settings import Settings
from processor.tools.dlq import list_dead_letters, reasons, requeue
from tests.conftest import REDIS_URL
from tests.entries import BASE_MS, bad_entry, entry
from tests.faults.harness import settings_env
from tests.integration.test_pipeline import add_all, drain

pytestmark = pytest.mark.integration


async def test_requeue_after_fixing_the_cause_stores_the_entry(
    settings: Settings, redis_client: aioredis.Redis, db: asyncpg.Connection
) -> None:
    await db.execute(
        "ALTER TABLE telemetry.positions ADD CONSTRAINT test_dlq CHECK (device_id <> 'BLOCKED')"
    )
    try:
        await add_all(
            redis_client,
            settings.stream,
            [entry("OK1", BASE_MS), entry("BLOCKED", BASE_MS), bad_entry("json")],
        )
        await drain(settings)
    finally:
        await db.execute("ALTER TABLE telemetry.positions DROP CONSTRAINT test_dlq")
    assert await reasons(redis_client, settings.dlq_stream) == {
        "storage_rejected": 1,
        "malformed_json": 1,
    }
    moved = await requeue(
        redis_client, settings.dlq_stream, settings.stream, reason="storage_rejected"
    )
    assert moved == 1
    await drain(settings)
    assert await db.fetchval("SELECT count(*) FROM telemetry.positions") == 2
    left = await list_dead_letters(redis_client, settings.dlq_stream)
    assert [v.reason for v in left] == ["malformed_json"]


def test_cli_lists_shows_and_requeues(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        for fields in (bad_entry("version"), bad_entry("missing")):
            client.xadd(settings.stream, fields)  # type: ignore[arg-type]
        asyncio.run(drain(settings))
        for key, value in settings_env(settings).items():
            if key.startswith("PROCESSOR_"):
                monkeypatch.setenv(key, value)
        runner = CliRunner()
        listed = runner.invoke(app, ["dlq", "list"])
        assert listed.exit_code == 0, listed.output
        assert "unsupported_version: 1" in listed.output
        assert "missing_field: 1" in listed.output
        newest: Any = client.xrevrange(settings.dlq_stream, count=1)
        newest_id = newest[0][0].decode()
        shown = runner.invoke(app, ["dlq", "show", newest_id])
        assert shown.exit_code == 0, shown.output
        assert "reason=missing_field" in shown.output
        assert runner.invoke(app, ["dlq", "show", "1-1"]).exit_code == 1
        requeued = runner.invoke(app, ["dlq", "requeue", newest_id])
        assert requeued.exit_code == 0, requeued.output
        assert "requeued 1" in requeued.output
        assert client.xlen(settings.dlq_stream) == 1
    finally:
        keys = list(client.scan_iter(match=f"{settings.stream}*"))
        if keys:
            client.delete(*keys)
        client.close()

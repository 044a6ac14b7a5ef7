"""Migrations: idempotent, safe from several instances at once, edits caught."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from processor.core.settings import load_settings
from processor.storage import migrate as migrate_module
from processor.storage.migrate import Migration, MigrationError, migrate

pytestmark = pytest.mark.integration


async def _migrate(url: str) -> migrate_module.MigrationReport:
    conn = await asyncpg.connect(url)
    try:
        return await migrate(conn, load_settings(database_url=url))
    finally:
        await conn.close()


async def test_first_run_applies_then_nothing_to_do(scratch_url: str, server_mode: str) -> None:
    first = await _migrate(scratch_url)
    assert first.mode == server_mode
    assert "0001_positions" in first.applied
    only_other = (
        "0003_position_time_index" if server_mode == "timescale" else "0002_positions_hypertable"
    )
    assert only_other in first.skipped
    second = await _migrate(scratch_url)
    assert second.applied == []
    assert second.skipped == []
    assert len(second.already) == len(first.applied) + len(first.skipped)
    conn = await asyncpg.connect(scratch_url)
    try:
        modes = await conn.fetch("SELECT DISTINCT mode FROM telemetry.schema_migrations")
        assert [r["mode"] for r in modes] == [server_mode]
        assert await conn.fetchval("SELECT to_regclass('telemetry.positions') IS NOT NULL")
    finally:
        await conn.close()


async def test_concurrent_instances_migrate_once(scratch_url: str) -> None:
    reports = await asyncio.gather(*(_migrate(scratch_url) for _ in range(4)))
    applied = [label for report in reports for label in report.applied]
    assert sorted(applied) == sorted(set(applied))  # each migration applied by exactly one
    conn = await asyncpg.connect(scratch_url)
    try:
        rows = await conn.fetchval("SELECT count(*) FROM telemetry.schema_migrations")
        assert rows == len(migrate_module.load_migrations())
    finally:
        await conn.close()


async def test_edited_migration_is_refused(
    scratch_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _migrate(scratch_url)
    original = migrate_module.load_migrations()
    edited = [
        Migration(m.version, m.name, m.variant, m.sql + "\n-- edited") if m.version == 1 else m
        for m in original
    ]
    monkeypatch.setattr(migrate_module, "load_migrations", lambda: edited)
    with pytest.raises(MigrationError, match="edited after it was applied"):
        await _migrate(scratch_url)

"""Plain-SQL migrations of the `telemetry` schema, applied in order under an advisory lock.

Files are `NNNN_name.sql` (always), `NNNN_name.timescale.sql` (only with TimescaleDB) or
`NNNN_name.plain.sql` (only without). The ledger records each version once, with the
mode it ran in, and a checksum so an edited, already-applied file is caught.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import resources
from typing import Literal

import asyncpg
import structlog

from processor.core.settings import Settings

log = structlog.get_logger(__name__)

SCHEMA = "telemetry"
# pg_advisory_lock key: "telemetry-migrate" folded into a bigint; stable across releases.
MIGRATION_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"telemetry-migrate").digest()[:8], "big", signed=True
)
Mode = Literal["timescale", "plain"]


class MigrationError(Exception):
    """The schema is not in a state this release can migrate."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    variant: Mode | None
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass
class MigrationReport:
    mode: Mode
    applied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)


def load_migrations() -> list[Migration]:
    """The shipped migration files, in version order."""
    found: list[Migration] = []
    folder = resources.files("processor.storage") / "migrations"
    for item in folder.iterdir():
        if not item.name.endswith(".sql"):
            continue
        stem = item.name[: -len(".sql")]
        variant: Mode | None = None
        for mode in ("timescale", "plain"):
            if stem.endswith(f".{mode}"):
                variant = mode
                stem = stem[: -len(mode) - 1]
        version_text, _, name = stem.partition("_")
        found.append(Migration(int(version_text), name, variant, item.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version: {versions}")
    return found


async def detect_mode(conn: asyncpg.Connection) -> Mode:
    """TimescaleDB when the extension is installed, or available and creatable here."""
    installed = await conn.fetchval("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
    if installed:
        return "timescale"
    available = await conn.fetchval(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    )
    if not available:
        return "plain"
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except asyncpg.PostgresError as exc:
        log.warning("timescaledb_unavailable", error=str(exc))
        return "plain"
    return "timescale"


async def migrate(conn: asyncpg.Connection, settings: Settings) -> MigrationReport:
    """Bring `telemetry` up to date; safe to run from several instances at once."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        return await _migrate_locked(conn, settings)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)


async def _migrate_locked(conn: asyncpg.Connection, settings: Settings) -> MigrationReport:
    has_schema = await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", SCHEMA)
    if not has_schema:
        await conn.execute(f"CREATE SCHEMA {SCHEMA}")
    await conn.execute(
        f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_migrations (
            version    integer PRIMARY KEY,
            name       text        NOT NULL,
            checksum   text        NOT NULL,
            mode       text        NOT NULL,
            status     text        NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )"""
    )
    mode = await detect_mode(conn)
    report = MigrationReport(mode=mode)
    ledger = {
        row["version"]: row
        for row in await conn.fetch(f"SELECT version, checksum FROM {SCHEMA}.schema_migrations")
    }
    for migration in load_migrations():
        label = f"{migration.version:04d}_{migration.name}"
        if migration.version in ledger:
            if ledger[migration.version]["checksum"] != migration.checksum:
                raise MigrationError(f"migration {label} was edited after it was applied")
            report.already.append(label)
            continue
        runs = migration.variant is None or migration.variant == mode
        async with conn.transaction():
            if runs:
                await conn.execute(_render(migration.sql, settings))
            await conn.execute(
                f"INSERT INTO {SCHEMA}.schema_migrations (version, name, checksum, mode, status)"
                " VALUES ($1, $2, $3, $4, $5)",
                migration.version,
                migration.name,
                migration.checksum,
                mode,
                "applied" if runs else f"skipped ({migration.variant} only)",
            )
        (report.applied if runs else report.skipped).append(label)
        log.info("migration_applied" if runs else "migration_skipped", migration=label, mode=mode)
    if mode == "timescale":
        await apply_timescale_policies(conn, settings)
    return report


def _render(sql: str, settings: Settings) -> str:
    """Fill the only placeholder migrations may use, as a quoted SQL literal."""
    literal = "'" + settings.timescale_chunk_interval.replace("'", "''") + "'"
    return sql.replace(":chunk_interval", literal)


async def apply_timescale_policies(conn: asyncpg.Connection, settings: Settings) -> None:
    """Compression and retention policies follow the settings on every migrate."""
    table = f"{SCHEMA}.positions"
    is_hypertable = await conn.fetchval(
        "SELECT 1 FROM timescaledb_information.hypertables"
        " WHERE hypertable_schema = $1 AND hypertable_name = 'positions'",
        SCHEMA,
    )
    if not is_hypertable:
        # Migrated in plain mode before TimescaleDB was installed: converting a large
        # table is an operator's decision (docs/operations.md), not a start-up side effect.
        log.warning("positions_not_a_hypertable", hint="see docs/operations.md, TimescaleDB")
        return
    await conn.execute("SELECT remove_compression_policy($1::regclass, if_exists => TRUE)", table)
    if settings.timescale_compress_after:
        await conn.execute(
            "SELECT add_compression_policy($1::regclass, CAST($2 AS interval))",
            table,
            settings.timescale_compress_after,
        )
    await conn.execute("SELECT remove_retention_policy($1::regclass, if_exists => TRUE)", table)
    if settings.timescale_retention:
        await conn.execute(
            "SELECT add_retention_policy($1::regclass, CAST($2 AS interval))",
            table,
            settings.timescale_retention,
        )


async def ensure_database(admin_dsn: str, database: str) -> bool:
    """Create the database if it is missing (development convenience); True if created."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if exists:
            return False
        quoted = '"' + database.replace('"', '""') + '"'
        await conn.execute(f"CREATE DATABASE {quoted}")
        return True
    finally:
        await conn.close()

"""Plain-SQL migrations of the `telemetry` schema, applied in order under an advisory lock.

Files are `NNNN_name.sql` (always), `NNNN_name.timescale.sql` (only with TimescaleDB),
`NNNN_name.plain.sql` (only without it: plain PostgreSQL, and Citus, whose tables are
PostgreSQL tables) or `NNNN_name.citus.sql` (only on Citus). The ledger records each
version once, with the mode it ran in, and a checksum so an edited, already-applied file
is caught.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import resources
from typing import Literal

import asyncpg
import structlog

from processor.core.settings import Settings
from processor.storage import citus, timescale
from processor.storage.engine import Engine
from processor.storage.pool import single_connection

log = structlog.get_logger(__name__)

SCHEMA = "telemetry"
# pg_advisory_lock key: "telemetry-migrate" folded into a bigint; stable across releases.
MIGRATION_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"telemetry-migrate").digest()[:8], "big", signed=True
)
Mode = Engine
Wanted = Literal["auto", "timescale", "citus", "plain"]
VARIANTS: tuple[Mode, ...] = ("timescale", "citus", "plain")


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

    def runs_in(self, mode: Mode) -> bool:
        """Whether this file applies to a database in `mode` (the module docstring)."""
        if self.variant is None or self.variant == mode:
            return True
        return self.variant == "plain" and mode == "citus"


@dataclass
class MigrationReport:
    mode: Mode
    applied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    policies: list[timescale.PolicyChange] = field(default_factory=list)


def load_migrations() -> list[Migration]:
    """The shipped migration files, in version order."""
    found: list[Migration] = []
    folder = resources.files("processor.storage") / "migrations"
    for item in folder.iterdir():
        if not item.name.endswith(".sql"):
            continue
        stem = item.name[: -len(".sql")]
        variant: Mode | None = None
        for mode in VARIANTS:
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


@dataclass(frozen=True)
class ModeDecision:
    """The mode to use, and whether the extension must be created first to get it."""

    mode: Mode
    create_extension: bool = False
    warning: str | None = None  # a log event name: the fallback to plain and why
    hint: str = ""  # what to do about the warning


def decide_mode(
    wanted: Wanted,
    ledger_mode: Mode | None,
    ext: timescale.Extension,
    cluster: citus.Cluster = citus.NO_CITUS,
) -> ModeDecision:
    """The database's mode: fixed by its first migration, chosen then from the settings
    (`PROCESSOR_DATABASE_MODE`) and what the server has. Raises `MigrationError`.

    A database migrated in one mode stays in it: positions are not converted to or from a
    hypertable or a distributed table as a side effect of a start (docs/operations.md
    says how to convert). A TimescaleDB extension installed in the database but not
    preloaded is refused in any mode: its event triggers would end the session at the
    first DDL statement. Citus is chosen when the citus extension is created in this
    database (an operator's deliberate act on every node) and the cluster is complete;
    an incomplete one is refused rather than fixed in plain mode for good.
    """
    if ext.installed and not ext.preloaded:
        where = (
            "this database was migrated in timescale mode but"
            if ledger_mode == "timescale"
            else "the timescaledb extension is installed in this database but"
        )
        raise MigrationError(f"{where} {timescale.FIX_PRELOAD}")
    if ledger_mode is not None:
        if wanted not in ("auto", ledger_mode):
            raise MigrationError(
                f"PROCESSOR_DATABASE_MODE={wanted} but this database was migrated in"
                f" {ledger_mode} mode; converting it is a manual operation (docs/operations.md)"
            )
        if ledger_mode == "timescale" and not ext.installed:
            raise MigrationError(
                "this database was migrated in timescale mode but the timescaledb extension is gone"
            )
        if ledger_mode == "citus" and not cluster.usable:
            raise MigrationError(
                f"this database was migrated in citus mode but {cluster.why_not()}"
            )
        return ModeDecision(ledger_mode)
    if wanted == "plain":
        return ModeDecision("plain")
    if wanted == "citus" or cluster.installed:
        return _citus_decision(wanted, ext, cluster)
    if cluster.preloaded and not (ext.installed and ext.preloaded):
        # Citus on the server but not in this database: plain (never TimescaleDB created
        # beside it), and say why.
        return ModeDecision("plain", warning="citus_not_in_database", hint=citus.MISSING)
    return _timescale_decision(wanted, ext)


def _citus_decision(
    wanted: Wanted, ext: timescale.Extension, cluster: citus.Cluster
) -> ModeDecision:
    if wanted == "timescale":
        raise MigrationError(
            "PROCESSOR_DATABASE_MODE=timescale but the citus extension is created in this"
            " database; the processor does not combine them"
        )
    if ext.installed:
        raise MigrationError(
            "both timescaledb and citus are created in this database; the processor uses one"
            " of them: drop the other, or set PROCESSOR_DATABASE_MODE=plain"
        )
    if not cluster.usable:
        where = (
            "PROCESSOR_DATABASE_MODE=citus but"
            if wanted == "citus"
            else "the citus extension is created in this database but"
        )
        hint = "" if wanted == "citus" else " (PROCESSOR_DATABASE_MODE=plain: this node alone)"
        raise MigrationError(f"{where} {cluster.why_not()}{hint}")
    return ModeDecision("citus")


def _timescale_decision(wanted: Wanted, ext: timescale.Extension) -> ModeDecision:
    """auto or timescale, on a database without Citus."""
    if ext.installed and ext.preloaded:
        return ModeDecision("timescale")
    if not ext.available:
        if wanted == "timescale":
            raise MigrationError(
                "PROCESSOR_DATABASE_MODE=timescale but the server has no timescaledb extension"
            )
        return ModeDecision("plain")
    if not ext.preloaded:
        if wanted == "timescale":
            raise MigrationError(timescale.NOT_PRELOADED)
        return ModeDecision(
            "plain", warning="timescaledb_not_preloaded", hint=timescale.NOT_PRELOADED
        )
    return ModeDecision("timescale", create_extension=True)


async def choose_mode(
    conn: asyncpg.Connection, settings: Settings, ledger_mode: Mode | None
) -> Mode:
    """`decide_mode` on what the server says, creating the extension when that is the way."""
    wanted = settings.database_mode
    ext = await timescale.inspect(conn)
    cluster = await citus.inspect(conn)
    decision = decide_mode(wanted, ledger_mode, ext, cluster)
    if decision.warning is not None:
        log.warning(decision.warning, mode=decision.mode, hint=decision.hint)
    if ledger_mode == "plain" and ext.usable:
        log.info("timescaledb_not_used", reason="this database was migrated in plain mode")
    if ledger_mode == "plain" and cluster.usable:
        log.info("citus_not_used", reason="this database was migrated in plain mode")
    if decision.mode == "citus":
        log.info("citus_cluster", version=cluster.version, workers=cluster.workers)
    if not decision.create_extension:
        return decision.mode
    try:
        version = await timescale.create_extension(conn)
    except asyncpg.PostgresError as exc:
        if wanted == "timescale":
            raise MigrationError(f"cannot create the timescaledb extension: {exc}") from None
        log.warning("timescaledb_unavailable", mode="plain", error=str(exc))
        return "plain"
    log.info("timescaledb_created", version=version)
    return "timescale"


async def migrate(conn: asyncpg.Connection, settings: Settings) -> MigrationReport:
    """Bring `telemetry` up to date; safe to run from several instances at once."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        return await _migrate_locked(conn, settings)
    finally:
        if not conn.is_closed():
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)


async def _migrate_locked(conn: asyncpg.Connection, settings: Settings) -> MigrationReport:
    # Read-only first: the mode is decided before any DDL, since DDL in a database whose
    # TimescaleDB is not preloaded ends the session (its event triggers load the library).
    ledger_exists = await conn.fetchval(
        "SELECT to_regclass($1) IS NOT NULL", f"{SCHEMA}.schema_migrations"
    )
    rows = (
        await conn.fetch(
            f"SELECT version, checksum, mode FROM {SCHEMA}.schema_migrations ORDER BY version"
        )
        if ledger_exists
        else []
    )
    ledger = {row["version"]: row for row in rows}
    ledger_mode: Mode | None = rows[0]["mode"] if rows else None
    mode = await choose_mode(conn, settings, ledger_mode)
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
    report = MigrationReport(mode=mode)
    for migration in load_migrations():
        label = f"{migration.version:04d}_{migration.name}"
        if migration.version in ledger:
            if ledger[migration.version]["checksum"] != migration.checksum:
                raise MigrationError(f"migration {label} was edited after it was applied")
            report.already.append(label)
            continue
        runs = migration.runs_in(mode)
        async with conn.transaction():
            if runs:
                for statement in _render(migration.sql, settings):
                    await conn.execute(statement)
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
        try:
            report.policies = await timescale.reconcile_policies(conn, settings)
        except timescale.TimescaleError as exc:
            raise MigrationError(str(exc)) from None
    return report


def _render(sql: str, settings: Settings) -> list[str]:
    """The file's statements, with the placeholders migrations may use filled in as SQL
    literals: `:chunk_interval` (quoted text) and `:citus_shard_count` (an integer).

    One statement at a time: Citus refuses several commands in one message on a
    distributed table ("cannot insert multiple commands into a prepared statement"), and
    an error then names the statement that failed.
    """
    literal = "'" + settings.timescale_chunk_interval.replace("'", "''") + "'"
    sql = sql.replace(":chunk_interval", literal)
    sql = sql.replace(":citus_shard_count", str(int(settings.citus_shard_count)))
    return split_statements(sql)


def split_statements(sql: str) -> list[str]:
    """Statements of a migration file, split on `;` at line ends outside comments.

    Migration files are ours and simple (no functions with bodies, no `;` inside
    literals), so a line-based split is exact for them; a test checks every shipped file.
    """
    statements: list[str] = []
    current: list[str] = []
    for line in sql.splitlines():
        code = line.split("--", 1)[0].rstrip()
        if not code and not current:
            continue
        current.append(line)
        if code.endswith(";"):
            statements.append("\n".join(current).strip())
            current = []
    tail = "\n".join(current).strip()
    if tail and any(part.split("--", 1)[0].strip() for part in current):
        statements.append(tail)
    return statements


async def ensure_database(admin_dsn: str, database: str, wanted: Wanted = "auto") -> bool:
    """Create the database if it is missing (development convenience); True if created.

    Not on a server that runs Citus (unless the database is to be plain, on it alone): a
    database made here would exist on the coordinator only, without the extension, and
    be migrated in plain mode for good. Raises `MigrationError` with the steps instead."""
    async with single_connection(admin_dsn, timeout_s=10) as conn:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if exists:
            return False
        if wanted != "plain" and await citus.server_runs_citus(conn):
            raise MigrationError(citus.CREATE_DATABASE_REFUSED)
        quoted = '"' + database.replace('"', '""') + '"'
        await conn.execute(f"CREATE DATABASE {quoted}")
        return True

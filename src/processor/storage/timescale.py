"""TimescaleDB: whether this server can use it, and its policies reconciled with the settings.

Invariants:
- Nothing here can make the server close the connection: the extension is created (and
  its functions called) only once its loader is known to be preloaded, since a
  TimescaleDB that is not preloaded answers with a FATAL error that ends the session.
- A policy is created, altered or removed only when it differs from the settings, never
  dropped and re-added, so its job id, history and `alter_job` tuning survive restarts.
- The processor manages only the policies it created itself (their job ids are recorded
  in `telemetry.timescale_policies`); a policy someone added by hand is reported and left
  alone, unless `PROCESSOR_TIMESCALE_OWN_POLICIES` hands it to the processor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import asyncpg
import structlog

from processor.core.settings import Settings
from processor.storage.pool import DbConnection

log = structlog.get_logger(__name__)

SCHEMA = "telemetry"
# Hypertables the processor creates, each with the same compression and retention settings.
HYPERTABLES = ("positions", "position_attributes")
Proc = Literal["policy_compression", "policy_retention"]
# The key in a job's config that holds the policy's interval.
CONFIG_KEY: dict[Proc, str] = {
    "policy_compression": "compress_after",
    "policy_retention": "drop_after",
}
Action = Literal["created", "altered", "removed", "unchanged", "adopted", "not_owned"]


class TimescaleError(Exception):
    """TimescaleDB is required here but cannot be used; the message is one line."""


@dataclass(frozen=True)
class Extension:
    """What the server says about the extension, read without loading it."""

    available: bool  # its control file is visible to the server
    installed: bool  # CREATE EXTENSION was done in this database
    preloaded: bool  # its loader is in shared_preload_libraries (the loader's settings exist)
    version: str | None

    @property
    def usable(self) -> bool:
        return self.available and self.preloaded


FIX_PRELOAD = (
    "not preloaded: add timescaledb to shared_preload_libraries in postgresql.conf"
    " and restart the server"
)
NOT_PRELOADED = f"the timescaledb extension is available but {FIX_PRELOAD}"


async def inspect(conn: DbConnection) -> Extension:
    """The extension's state from the catalogs and settings: touches none of its code."""
    row = await conn.fetchrow(
        """SELECT
             EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') AS available,
             (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb') AS version,
             EXISTS (SELECT 1 FROM pg_settings WHERE name = 'timescaledb.disable_load')
               AS preloaded"""
    )
    assert row is not None
    return Extension(
        available=bool(row["available"]) or row["version"] is not None,
        installed=row["version"] is not None,
        preloaded=bool(row["preloaded"]),
        version=row["version"],
    )


async def create_extension(conn: DbConnection) -> str:
    """CREATE EXTENSION (a preloaded loader is checked first); the installed version."""
    await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    version = await conn.fetchval(
        "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
    )
    return str(version)


async def normalized_interval(conn: DbConnection, setting: str, value: str) -> str | None:
    """The setting as PostgreSQL prints the interval; None when empty (no policy)."""
    if not value.strip():
        return None
    try:
        text = await conn.fetchval("SELECT CAST(CAST($1 AS text) AS interval)::text", value)
    except asyncpg.PostgresError as exc:
        raise TimescaleError(f"{setting}={value!r} is not an interval: {exc}") from None
    return str(text)


async def hypertables(conn: DbConnection) -> dict[str, bool]:
    """The processor's tables that are hypertables, each with whether compression is on."""
    rows = await conn.fetch(
        "SELECT hypertable_name, compression_enabled FROM timescaledb_information.hypertables"
        " WHERE hypertable_schema = $1",
        SCHEMA,
    )
    return {r["hypertable_name"]: bool(r["compression_enabled"]) for r in rows}


@dataclass(frozen=True)
class PolicyChange:
    """What reconciling did to one (hypertable, policy) pair, for the report and the log."""

    hypertable: str
    proc: Proc
    action: Action
    job_id: int | None
    interval: str | None  # the interval in force afterwards (None: no policy)
    detail: str = ""

    def line(self) -> str:
        job = f"job {self.job_id}" if self.job_id is not None else "no job"
        text = f"{self.hypertable} {self.proc}: {self.action} ({job}, {self.interval or 'none'})"
        return f"{text}; {self.detail}" if self.detail else text


async def reconcile_policies(conn: DbConnection, settings: Settings) -> list[PolicyChange]:
    """Bring every hypertable's compression and retention policy to the settings."""
    wanted: dict[Proc, str | None] = {
        "policy_compression": await normalized_interval(
            conn, "PROCESSOR_TIMESCALE_COMPRESS_AFTER", settings.timescale_compress_after
        ),
        "policy_retention": await normalized_interval(
            conn, "PROCESSOR_TIMESCALE_RETENTION", settings.timescale_retention
        ),
    }
    changes: list[PolicyChange] = []
    tables = await hypertables(conn)
    for table in HYPERTABLES:
        if table not in tables:
            continue
        for proc, interval in wanted.items():
            if proc == "policy_compression" and not tables[table] and interval is not None:
                log.warning("timescale_compression_disabled", hypertable=table)
                continue
            async with conn.transaction():
                change = await _reconcile_one(
                    conn, table, proc, interval, own_all=settings.timescale_own_policies
                )
            if change is not None:
                changes.append(change)
                level = log.warning if change.action == "not_owned" else log.info
                level(
                    "timescale_policy",
                    hypertable=table,
                    policy=proc,
                    action=change.action,
                    job_id=change.job_id,
                    interval=change.interval,
                    detail=change.detail or None,
                )
    return changes


async def _reconcile_one(
    conn: DbConnection, table: str, proc: Proc, interval: str | None, *, own_all: bool
) -> PolicyChange | None:
    key = CONFIG_KEY[proc]
    jobs = await conn.fetch(
        """SELECT job_id, config ->> $3 AS current,
                  CASE WHEN $4::text IS NULL THEN NULL
                       ELSE (config ->> $3)::interval = CAST($4::text AS interval) END AS same
           FROM timescaledb_information.jobs
           WHERE hypertable_schema = $1 AND hypertable_name = $2 AND proc_name = $5
           ORDER BY job_id""",
        SCHEMA,
        table,
        key,
        interval,
        proc,
    )
    owned = await conn.fetchval(
        f"SELECT job_id FROM {SCHEMA}.timescale_policies WHERE hypertable = $1 AND proc = $2",
        table,
        proc,
    )
    job = jobs[0] if jobs else None
    if job is None:
        if owned is not None:  # our job was removed by hand: the record goes with it
            await _forget(conn, table, proc)
        if interval is None:
            return None
        job_id = await _add_policy(conn, table, proc, interval)
        await _remember(conn, table, proc, job_id)
        return PolicyChange(table, proc, "created", job_id, interval)
    job_id = int(job["job_id"])
    ours = owned == job_id
    if not ours and not own_all:
        verdict = "matches the settings" if job["same"] else "differs from the settings"
        return PolicyChange(
            table,
            proc,
            "not_owned",
            job_id,
            job["current"],
            f"made outside the processor, left as it is ({verdict});"
            " PROCESSOR_TIMESCALE_OWN_POLICIES=true hands it to the processor",
        )
    if interval is None:
        await conn.execute("SELECT delete_job($1)", job_id)
        await _forget(conn, table, proc)
        return PolicyChange(table, proc, "removed", job_id, None)
    if not ours:
        await _remember(conn, table, proc, job_id)
    if job["same"]:
        return None if ours else PolicyChange(table, proc, "adopted", job_id, interval)
    await conn.execute(
        "SELECT alter_job($1, config => jsonb_set(config, ARRAY[$2::text], to_jsonb($3::text)))"
        " FROM timescaledb_information.jobs WHERE job_id = $1",
        job_id,
        key,
        interval,
    )
    return PolicyChange(
        table, proc, "altered", job_id, interval, f"was {job['current']}; job history kept"
    )


async def _add_policy(conn: DbConnection, table: str, proc: Proc, interval: str) -> int:
    function = "add_compression_policy" if proc == "policy_compression" else "add_retention_policy"
    job_id = await conn.fetchval(
        f"SELECT {function}($1::regclass, CAST($2::text AS interval))",
        f"{SCHEMA}.{table}",
        interval,
    )
    return int(job_id)


async def _remember(conn: DbConnection, table: str, proc: Proc, job_id: int) -> None:
    await conn.execute(
        f"INSERT INTO {SCHEMA}.timescale_policies (hypertable, proc, job_id) VALUES ($1, $2, $3)"
        " ON CONFLICT (hypertable, proc) DO UPDATE SET job_id = EXCLUDED.job_id",
        table,
        proc,
        job_id,
    )


async def _forget(conn: DbConnection, table: str, proc: Proc) -> None:
    await conn.execute(
        f"DELETE FROM {SCHEMA}.timescale_policies WHERE hypertable = $1 AND proc = $2", table, proc
    )


@dataclass(frozen=True)
class JobStat:
    """One background job on a processor hypertable, as `job_stats` reports it."""

    job_id: int
    proc: str
    hypertable: str
    last_run_ok: bool | None  # None: never ran
    total_runs: int
    total_failures: int
    last_success_age_s: float | None


async def job_stats(conn: DbConnection) -> list[JobStat]:
    """The jobs on the processor's hypertables, with their run history."""
    rows = await conn.fetch(
        """SELECT j.job_id, j.proc_name, j.hypertable_name, s.last_run_status,
                  coalesce(s.total_runs, 0) AS total_runs,
                  coalesce(s.total_failures, 0) AS total_failures,
                  extract(epoch FROM now() - s.last_successful_finish)::float8 AS success_age
           FROM timescaledb_information.jobs j
           LEFT JOIN timescaledb_information.job_stats s ON s.job_id = j.job_id
           WHERE j.hypertable_schema = $1
           ORDER BY j.job_id""",
        SCHEMA,
    )
    return [
        JobStat(
            job_id=int(r["job_id"]),
            proc=str(r["proc_name"]),
            hypertable=str(r["hypertable_name"]),
            last_run_ok=None if r["last_run_status"] is None else r["last_run_status"] == "Success",
            total_runs=int(r["total_runs"]),
            total_failures=int(r["total_failures"]),
            last_success_age_s=r["success_age"],
        )
        for r in rows
    ]

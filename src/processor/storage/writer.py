"""Batched, idempotent writes of positions, with retries and row-level isolation.

One statement per batch, `ON CONFLICT (device_id, ts) DO NOTHING`, so a replay is a
no-op. Transient errors are retried with backoff for as long as it takes (the caller
acknowledges nothing meanwhile); a data error is narrowed down by splitting the batch
until the single offending row is found, and only that row is handed back.

Invariant: `inserted` is the number of rows this batch added, on every engine. It is
counted from `RETURNING` (a CTE's `count(*)`, one number on the wire), never from the
command tag: on a Citus distributed table the tag of `INSERT … SELECT … ON CONFLICT DO
NOTHING` is the number of rows sent, not stored, and the duplicates metric would read 0.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import asyncpg
import structlog

from processor.core.position import Position
from processor.core.retry import describe, forever, retrying
from processor.observability.metrics import Metrics
from processor.storage.errors import ErrorClass, classify
from processor.storage.pool import STAGE_TABLE
from processor.storage.rows import COLUMNS, SQL_TYPES, Row, to_row

log = structlog.get_logger(__name__)

WriteMethod = Literal["copy", "unnest"]
_COLS = ", ".join(COLUMNS)


def counted(insert: str) -> str:
    """The insert, answering how many rows it added (`RETURNING`, counted server-side)."""
    return (
        f"WITH added AS ({insert} ON CONFLICT (device_id, ts) DO NOTHING RETURNING 1)"
        " SELECT count(*) FROM added"
    )


# The copy method's insert, before its conflict clause and count (the benchmark compares
# the counted form with the command tag's).
STAGE_INSERT = f"INSERT INTO telemetry.positions ({_COLS}) SELECT {_COLS} FROM {STAGE_TABLE}"
_INSERT_FROM_STAGE = counted(STAGE_INSERT)
_INSERT_UNNEST = counted(
    f"INSERT INTO telemetry.positions ({_COLS}) SELECT * FROM unnest("
    + ", ".join(f"${i}::{t}[]" for i, t in enumerate(SQL_TYPES, start=1))
    + ")"
)


@dataclass
class WriteResult:
    inserted: int = 0
    failed: list[tuple[Position, str]] = field(default_factory=list)


class RowError(Exception):
    """A batch failed because of the data in (at least) one of its rows."""


class Sleeper(Protocol):
    async def __call__(self, delay: float) -> None: ...


class PositionWriter:
    """Writes batches of positions; safe to call concurrently (one connection each)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        metrics: Metrics,
        *,
        method: WriteMethod = "copy",
        retry_initial_s: float = 0.1,
        retry_max_s: float = 10.0,
    ) -> None:
        self.pool = pool
        self.metrics = metrics
        self.method = method
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s

    async def write(self, positions: Sequence[Position]) -> WriteResult:
        """Store the batch; returns how many rows were new and which rows the DB refused."""
        started = time.perf_counter()
        rows = [to_row(p) for p in positions]
        result = await self._write_isolating(list(positions), rows)
        self.metrics.write_duration.observe(time.perf_counter() - started)
        self.metrics.batch_rows.observe(len(rows))
        return result

    async def _write_isolating(self, positions: list[Position], rows: list[Row]) -> WriteResult:
        try:
            return WriteResult(inserted=await self._write_retrying(rows))
        except RowError as exc:
            if len(rows) == 1:
                return WriteResult(failed=[(positions[0], str(exc))])
        middle = len(rows) // 2
        left = await self._write_isolating(positions[:middle], rows[:middle])
        right = await self._write_isolating(positions[middle:], rows[middle:])
        return WriteResult(left.inserted + right.inserted, left.failed + right.failed)

    async def _write_retrying(self, rows: list[Row]) -> int:
        """Until the batch is stored: every error but a row's is retried (an unknown
        error must never lose a position); a row's is raised for isolation."""

        def retryable(exc: BaseException) -> str | None:
            kind = classify(exc)
            self.metrics.db_errors.labels(kind.value).inc()
            return None if kind is ErrorClass.ROW else kind.value

        try:
            return await retrying(
                "write",
                lambda: self._write_once(rows),
                on=retryable,
                policy=forever(self.retry_initial_s, self.retry_max_s),
                count=lambda error: self.metrics.retries.labels(error).inc(),
                event="write_retry",
                rows=len(rows),
            )
        except Exception as exc:
            if classify(exc) is ErrorClass.ROW:
                raise RowError(describe(exc)) from exc
            raise

    async def _write_once(self, rows: list[Row]) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            if self.method == "copy":
                await conn.copy_records_to_table(STAGE_TABLE, records=rows, columns=COLUMNS)
                added = await conn.fetchval(_INSERT_FROM_STAGE)
            else:
                columns = list(zip(*rows, strict=True)) if rows else [()] * len(COLUMNS)
                added = await conn.fetchval(_INSERT_UNNEST, *columns)
        return int(added)

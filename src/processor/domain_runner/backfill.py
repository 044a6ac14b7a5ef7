"""Recompute `telemetry.position_attributes` from stored positions with the live decoder.

`processor backfill attributes` (issue 17): after a mapping is added or corrected, the
attributes of past positions are rebuilt without re-feeding the stream and without
touching `telemetry.positions` (it is only read).

How it works through the data:

- **Units**: on TimescaleDB the chunks of `telemetry.positions`, in time order, each one
  read and written on its own (compressed chunks included: reading decompresses a
  device's segment; the upsert into a compressed chunk of `position_attributes` is
  DML on compressed data, TimescaleDB 2.11+). On plain PostgreSQL one unit.
- **Items**: within a unit, each device of the scope with positions there, in device
  order (one `GROUP BY` per unit plans the work and gives the progress bar its total).
- **Pages**: within an item, `batch` positions in time order (a compressed unit's item
  in one page: every page of a compressed segment would decompress it again). Each page
  is one transaction: the device's advisory lock (the domain stage's lock order, so the
  live writer and the backfill never deadlock on a row), the changed rows upserted
  through the live writer's statement, removed rows deleted, and the checkpoint.

Invariants:

- the result equals a fresh run of the live stage with the current mappings: the same
  decoder (`decode_attributes`), encoding, version and statement
  (`domain_runner/attributes.py`); a row whose model has no mapping any more is
  deleted, as a fresh run would not write it;
- resumable: the checkpoint (`telemetry.backfill_checkpoints`, one row per job = kind
  + scope) is committed with the rows it covers, so after a crash at any point
  (kill -9) running the same command again continues after the last committed page;
  a job interrupted before a mapping edit starts over;
- bounded load: at most `rate` positions per second (0: no limit), so a running event
  is not slowed (the figures are in docs/performance.md);
- a dry run reads the same and writes nothing, not even the checkpoint.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import msgspec
import structlog

from processor.domain.attributes import (
    AttributeValue,
    MappingTable,
    ModelMappings,
    Unfit,
    load_mappings,
    same_value,
)
from processor.domain.config import RowError
from processor.domain_runner.attribute_audit import AttributeAudit
from processor.domain_runner.attributes import (
    decode_record,
    encode_attributes,
    upsert_attributes,
)
from processor.domain_runner.config_source import MAPPINGS_SQL, mapping_rows
from processor.domain_runner.locks import lock_device
from processor.storage import timescale
from processor.storage.pool import DbConnection

log = structlog.get_logger(__name__)

KIND = "attributes"
MIN_MS = 0
MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
# A compressed unit's item is read in one page up to this many positions.
COMPRESSED_PAGE_MAX = 200_000
_decode_io = msgspec.json.Decoder(dict[str, Any]).decode
_decode_old = msgspec.json.Decoder(dict[str, Any], float_hook=Decimal).decode

_UNITS_SQL = """
SELECT (extract(epoch FROM range_start) * 1000)::bigint AS lo,
       (extract(epoch FROM range_end) * 1000)::bigint AS hi, is_compressed
FROM timescaledb_information.chunks
WHERE hypertable_schema = 'telemetry' AND hypertable_name = 'positions'
ORDER BY range_start
"""
_ITEMS_SQL = """
SELECT device_id, count(*) AS n FROM telemetry.positions
WHERE ts >= to_timestamp($1 / 1000.0) AND ts < to_timestamp($2 / 1000.0)
  AND ($3::text[] IS NULL OR device_id = ANY($3::text[]))
GROUP BY device_id ORDER BY device_id
"""
_PAGE_SQL = """
SELECT (extract(epoch FROM p.ts) * 1000)::bigint AS ts_ms, p.io::text AS io,
       a.attributes::text AS old, a.mapping_version AS old_version
FROM telemetry.positions p
LEFT JOIN telemetry.position_attributes a ON a.device_id = p.device_id AND a.ts = p.ts
    -- The unit's range on both sides: TimescaleDB excludes the other chunks of either
    -- hypertable (a constant propagates through a.ts = p.ts, a range does not).
    AND a.ts >= to_timestamp($2 / 1000.0) AND a.ts < to_timestamp($3 / 1000.0)
WHERE p.device_id = $1
  AND p.ts >= to_timestamp($2 / 1000.0) AND p.ts < to_timestamp($3 / 1000.0)
  AND p.ts > to_timestamp($4 / 1000.0)
ORDER BY p.ts
LIMIT $5
"""
_DELETE_SQL = """
DELETE FROM telemetry.position_attributes
WHERE device_id = $1 AND ts IN (SELECT to_timestamp(t / 1000.0) FROM unnest($2::bigint[]) AS t)
"""
_CHECKPOINT_SQL = """
INSERT INTO telemetry.backfill_checkpoints
    (job, kind, scope, mapping_version, unit_ms, device_id, ts_ms, scanned, written, deleted,
     started_at, updated_at, finished_at)
VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7, $8, $9, $10, now(), now(), NULL)
ON CONFLICT (job) DO UPDATE SET
    mapping_version = EXCLUDED.mapping_version, unit_ms = EXCLUDED.unit_ms,
    device_id = EXCLUDED.device_id, ts_ms = EXCLUDED.ts_ms, scanned = EXCLUDED.scanned,
    written = EXCLUDED.written, deleted = EXCLUDED.deleted, updated_at = now(),
    finished_at = NULL,
    started_at = CASE WHEN $11 THEN now() ELSE telemetry.backfill_checkpoints.started_at END
"""


class BackfillError(Exception):
    """The backfill cannot run (missing tables, another run of the same job)."""


@dataclass(frozen=True)
class Scope:
    """Which positions: a device model, devices, a time range [since, until)."""

    model: str | None = None
    devices: tuple[str, ...] = ()
    since_ms: int | None = None
    until_ms: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "devices": sorted(set(self.devices)),
            "since_ms": self.since_ms,
            "until_ms": self.until_ms,
        }

    @property
    def job(self) -> str:
        return f"{KIND}:" + msgspec.json.encode(self.as_json()).decode()

    @property
    def lo_ms(self) -> int:
        return MIN_MS if self.since_ms is None else self.since_ms

    @property
    def hi_ms(self) -> int:
        return MAX_MS if self.until_ms is None else self.until_ms


@dataclass(frozen=True)
class Unit:
    lo_ms: int
    hi_ms: int
    compressed: bool = False


@dataclass(frozen=True)
class Item:
    unit: Unit
    device_id: str
    positions: int


Mode = Literal["timescale", "plain"]


@dataclass
class Plan:
    mode: Mode
    units: list[Unit]
    items: list[Item]
    version: str  # the mappings of every model in scope (digest)
    table: MappingTable
    models: dict[str, str]  # device → model (public.devices)
    errors: list[RowError]
    devices: list[str] | None = None  # the scope's devices (None: every device)

    @property
    def total(self) -> int:
        return sum(i.positions for i in self.items)

    def mappings_of(self, device_id: str) -> ModelMappings:
        return self.table.resolve(self.models.get(device_id))


@dataclass(frozen=True)
class Sample:
    """One position whose attributes change: old → new (None: no row)."""

    device_id: str
    ts_ms: int
    old: dict[str, Any] | None
    new: dict[str, AttributeValue] | None


@dataclass
class Tally:
    scanned: int = 0
    added: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    unfit: int = 0
    samples: list[Sample] = field(default_factory=list)

    @property
    def written(self) -> int:
        return self.added + self.updated


@dataclass
class Outcome:
    plan: Plan
    tally: Tally
    resumed_from: tuple[int, str, int] | None = None  # (unit, device, ts) of the checkpoint
    restarted_because: str | None = None
    up_to_date: bool = False  # --if-changed and nothing changed since the last run
    interrupted: bool = False
    elapsed_s: float = 0.0
    finished: bool = False

    @property
    def rate(self) -> float:
        return self.tally.scanned / self.elapsed_s if self.elapsed_s > 0 else 0.0


class RateLimit:
    """At most `rate` positions per second on average (0: unlimited), with at most one
    second of credit: a slow page is not followed by a burst."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._t0: float | None = None
        self._budget_s = 0.0

    def start(self) -> None:
        self._t0 = self._clock()
        self._budget_s = 0.0

    async def took(self, positions: int) -> None:
        if self.rate <= 0 or positions <= 0:
            return
        if self._t0 is None:
            self.start()
        assert self._t0 is not None
        self._budget_s += positions / self.rate
        delay = self._t0 + self._budget_s - self._clock()
        if delay > 0:
            await self._sleep(delay)
        elif delay < -1.0:  # behind by more than a second: no credit beyond that
            self._t0 = self._clock() - 1.0
            self._budget_s = 0.0


async def load_plan(conn: DbConnection, scope: Scope, *, items: bool = True) -> Plan:
    """The mappings and device models (as the live stage reads them), the units and (with
    `items`) the items of the scope. The version needs no positions: a timer's
    `--if-changed` run that has nothing to do reads no position."""
    missing = [
        r["t"]
        for r in await conn.fetch(
            "SELECT t FROM unnest($1::text[]) AS t WHERE to_regclass(t) IS NULL",
            [
                "public.io_mappings",
                "public.devices",
                "telemetry.positions",
                "telemetry.position_attributes",
                "telemetry.backfill_checkpoints",
            ],
        )
    ]
    if missing:
        raise BackfillError(
            f"{', '.join(missing)} missing: run `processor migrate` and apply the Directus"
            " snapshot (or the SQL fixture) first"
        )
    table, errors = load_mappings(mapping_rows([dict(r) for r in await conn.fetch(MAPPINGS_SQL)]))
    models = {
        r["imei"]: r["model"] for r in await conn.fetch("SELECT imei, model FROM public.devices")
    }
    devices: list[str] | None = None
    if scope.model is not None:
        devices = sorted(d for d, m in models.items() if m == scope.model)
        if scope.devices:
            devices = sorted(set(devices) & set(scope.devices))
    elif scope.devices:
        devices = sorted(set(scope.devices))
    if scope.model is not None:
        in_scope = {scope.model}
    elif scope.devices:
        in_scope = {models.get(d) or "" for d in scope.devices}
    else:  # every registered model, and "" for devices Directus does not know
        in_scope = {*models.values(), ""}
    versions = [(m, table.resolve(m or None).version) for m in sorted(in_scope)]
    version = hashlib.sha256(msgspec.json.encode(versions)).hexdigest()[:16]
    mode, units = await _units(conn, scope)
    plan = Plan(mode, units, [], version, table, models, errors, devices)
    if items:
        await add_items(conn, plan)
    return plan


async def add_items(conn: DbConnection, plan: Plan) -> None:
    """Per unit, the devices in scope with positions there and how many (one GROUP BY)."""
    if plan.devices is not None and not plan.devices:
        return
    for unit in plan.units:
        for r in await conn.fetch(_ITEMS_SQL, unit.lo_ms, unit.hi_ms, plan.devices):
            plan.items.append(Item(unit, r["device_id"], int(r["n"])))


async def _units(conn: DbConnection, scope: Scope) -> tuple[Mode, list[Unit]]:
    extension = await timescale.inspect(conn)
    if extension.installed and "positions" in await timescale.hypertables(conn):
        units = []
        for r in await conn.fetch(_UNITS_SQL):
            lo, hi = max(int(r["lo"]), scope.lo_ms), min(int(r["hi"]), scope.hi_ms)
            if lo < hi:
                units.append(Unit(lo, hi, bool(r["is_compressed"])))
        return "timescale", units
    return "plain", [Unit(scope.lo_ms, scope.hi_ms)]


class Backfill:
    """One run over a scope (the module docstring)."""

    def __init__(
        self,
        conn: DbConnection,
        scope: Scope,
        *,
        dry_run: bool = False,
        rate: float = 0.0,
        batch: int = 1000,
        samples: int = 5,
        if_changed: bool = False,
        settle_s: float = 0.0,
        audit: AttributeAudit | None = None,
        on_plan: Callable[[Plan, int], None] | None = None,
        on_progress: Callable[[Tally, int], None] | None = None,
        stop: asyncio.Event | None = None,
    ) -> None:
        self.conn = conn
        self.scope = scope
        self.dry_run = dry_run
        self.limit = RateLimit(rate)
        self.batch = batch
        self.samples = samples
        self.if_changed = if_changed
        self.settle_s = settle_s
        self.audit = audit or AttributeAudit()
        self.on_plan = on_plan
        self.on_progress = on_progress
        self.stop = stop or asyncio.Event()

    async def run(self) -> Outcome:
        started = time.monotonic()
        plan = await load_plan(self.conn, self.scope, items=False)
        outcome = Outcome(plan, Tally())
        job = self.scope.job
        lock = await self.conn.fetchval(
            "SELECT pg_try_advisory_lock(hashtextextended($1, 0))", f"processor:backfill:{job}"
        )
        if not lock:
            raise BackfillError("this backfill is running already (same scope, another process)")
        try:
            cursor = await self._start(plan, outcome)
            if outcome.up_to_date:
                return outcome
            await add_items(self.conn, plan)
            done_before = sum(i.positions for i in plan.items if cursor and _key(i) < cursor[:2])
            if self.on_plan is not None:
                self.on_plan(plan, done_before)
            if self.settle_s > 0 and not self.dry_run:
                # Every running domain stage re-reads the mappings within this time: after
                # it, none writes a position with the mapping this run replaces.
                await asyncio.sleep(self.settle_s)
            self.limit.start()
            for item in plan.items:
                if self.stop.is_set():
                    outcome.interrupted = True
                    break
                if cursor is not None and _key(item) < cursor[:2]:
                    continue
                after = cursor[2] if cursor is not None and _key(item) == cursor[:2] else -1
                await self._item(plan, item, after, outcome.tally)
            else:
                outcome.finished = True
                if not self.dry_run:
                    await self.conn.execute(
                        "UPDATE telemetry.backfill_checkpoints SET finished_at = now(),"
                        " updated_at = now(), mapping_version = $2 WHERE job = $1",
                        job,
                        plan.version,
                    )
        finally:
            await self.conn.execute(
                "SELECT pg_advisory_unlock(hashtextextended($1, 0))", f"processor:backfill:{job}"
            )
            outcome.elapsed_s = time.monotonic() - started
        return outcome

    async def _start(self, plan: Plan, outcome: Outcome) -> tuple[int, str, int] | None:
        """The cursor to resume from (None: from the start), from the checkpoint."""
        row = await self.conn.fetchrow(
            "SELECT * FROM telemetry.backfill_checkpoints WHERE job = $1", self.scope.job
        )
        if row is None:
            fresh = True
        elif row["finished_at"] is not None:
            if self.if_changed and row["mapping_version"] == plan.version:
                outcome.up_to_date = True
                return None
            fresh = True
        elif row["mapping_version"] != plan.version:
            if not self.dry_run:
                outcome.restarted_because = "the mappings changed since the interrupted run"
            fresh = True
        else:
            fresh = row["unit_ms"] is None
        if self.dry_run:
            return None  # a dry run always reads everything and writes nothing
        if fresh or row is None:
            await self._checkpoint(plan, None, Tally(), restart=True)
            return None
        tally = outcome.tally
        tally.scanned = int(row["scanned"])
        tally.added = int(row["written"])  # resumed: written so far, added or updated
        tally.deleted = int(row["deleted"])
        cursor = (int(row["unit_ms"]), str(row["device_id"]), int(row["ts_ms"]))
        outcome.resumed_from = cursor
        return cursor

    async def _checkpoint(
        self,
        plan: Plan,
        cursor: tuple[int, str, int] | None,
        tally: Tally,
        *,
        restart: bool = False,
    ) -> None:
        await self.conn.execute(
            _CHECKPOINT_SQL,
            self.scope.job,
            KIND,
            msgspec.json.encode(self.scope.as_json()).decode(),
            plan.version,
            None if cursor is None else cursor[0],
            None if cursor is None else cursor[1],
            None if cursor is None else cursor[2],
            tally.scanned,
            tally.written,
            tally.deleted,
            restart,
        )

    async def _item(self, plan: Plan, item: Item, after_ms: int, tally: Tally) -> None:
        mappings = plan.mappings_of(item.device_id)
        page = self.batch
        if item.unit.compressed:
            page = max(page, min(item.positions, COMPRESSED_PAGE_MAX))
        unfit: list[Unfit] = []
        while not self.stop.is_set():
            rows = await self.conn.fetch(
                _PAGE_SQL, item.device_id, item.unit.lo_ms, item.unit.hi_ms, after_ms, page
            )
            if not rows:
                return
            times: list[int] = []
            encoded: list[str] = []
            versions: list[str] = []
            gone: list[int] = []
            for r in rows:
                new: dict[str, AttributeValue] | None = None
                if mappings:
                    new = decode_record(_decode_io(r["io"]), mappings, unfit)
                    if unfit:
                        tally.unfit += len(unfit)
                        self.audit.record(unfit, item.device_id, r["ts_ms"])
                        unfit.clear()
                old = None if r["old"] is None else _decode_old(r["old"])
                tally.scanned += 1
                if new is None:
                    if old is None:
                        tally.unchanged += 1
                        continue
                    gone.append(r["ts_ms"])
                    tally.deleted += 1
                elif (
                    old is not None
                    and r["old_version"] == mappings.version
                    and same_value(old, new)
                ):
                    tally.unchanged += 1
                    continue
                else:
                    times.append(r["ts_ms"])
                    encoded.append(encode_attributes(new))
                    versions.append(mappings.version)
                    if old is None:
                        tally.added += 1
                    else:
                        tally.updated += 1
                if len(tally.samples) < self.samples:
                    tally.samples.append(Sample(item.device_id, r["ts_ms"], old, new))
            after_ms = rows[-1]["ts_ms"]
            if not self.dry_run:
                async with self.conn.transaction():
                    await lock_device(self.conn, item.device_id)
                    await upsert_attributes(
                        self.conn, [item.device_id] * len(times), times, encoded, versions
                    )
                    if gone:
                        await self.conn.execute(_DELETE_SQL, item.device_id, gone)
                    await self._checkpoint(plan, (item.unit.lo_ms, item.device_id, after_ms), tally)
            if self.on_progress is not None:
                self.on_progress(tally, len(rows))
            await self.limit.took(len(rows))
            if len(rows) < page:
                return


def _key(item: Item) -> tuple[int, str]:
    return (item.unit.lo_ms, item.device_id)

"""The `io_mappings` rows in Directus's table: load shipped ones, check, upgrade old ones.

Rows only (DML, ADR 0001): the table and its columns come from the Directus snapshot.
Three operations, each one transaction under one advisory lock, so two at once cannot
interleave:

- `load_shipped`: add a shipped model's rows (`domain/mappings/teltonika.toml`) that
  are missing. A row already there for the model and io id is never changed, whoever
  wrote it (an official's edit in the Studio wins; deleting the row and loading again
  restores the shipped one); the report says where it differs. Loading twice adds
  nothing.
- `check`: every row the decoder would skip, with why (as the live stage logs them).
- `upgrade`: rewrite rows of the first vocabulary (`int`, `float`, `bool`, `string`,
  multiplier 1) into ADR 0013's, filling a signed row's missing width from the shipped
  tables where they know it. The decoder reads the old rows the same way meanwhile;
  this is for the Studio to show the new choices.

Writes made with SQL bypass Directus's cache and activity log: after a load or an
upgrade, clear the cache (or restart Directus) if the Studio still shows old rows.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass, field
from typing import Any

import msgspec

from processor.domain.attributes import (
    LEGACY_TYPES,
    IoMapping,
    MappingError,
    MappingTable,
    load_mappings,
    parse_mapping,
)
from processor.domain.config import RowError
from processor.domain.shipped_mappings import shipped_mapping, shipped_rows
from processor.domain_runner.config_source import MAPPINGS_SQL, mapping_rows
from processor.storage.pool import DbConnection

ADR_0013_COLUMNS = frozenset({"width", "offset_value", "decimals", "labels"})
_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('processor:io_mappings', 0))"
_INSERT = """
INSERT INTO public.io_mappings
    (model, io_id, name, type, width, multiplier, offset_value, decimals, labels, unit)
VALUES ($1, $2, $3, $4, $5, $6::numeric, $7::numeric, $8, $9::json, $10)
"""
_COMPARED = ("name", "type", "width", "multiplier", "offset", "decimals", "labels", "unit")


class MappingsError(Exception):
    """The tables are not there, or not in a shape these commands can write."""


@dataclass
class Kept:
    """A row already in the table that differs from the shipped one: left alone."""

    shipped: IoMapping
    existing: dict[str, Any]
    differences: list[str]


@dataclass
class LoadReport:
    model: str
    added: list[IoMapping] = field(default_factory=list)
    unchanged: list[IoMapping] = field(default_factory=list)
    kept: list[Kept] = field(default_factory=list)
    dry_run: bool = False


@dataclass
class Upgraded:
    row_id: int
    before: dict[str, Any]
    after: dict[str, Any]
    problem: str | None  # still invalid after the upgrade (an official must fix it)


async def read_rows(conn: DbConnection) -> list[dict[str, Any]]:
    await _require_table(conn)
    return mapping_rows([dict(r) for r in await conn.fetch(MAPPINGS_SQL)])


async def _require_table(conn: DbConnection, *, new_columns: bool = False) -> None:
    columns = {
        r["column_name"]
        for r in await conn.fetch(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = 'public' AND table_name = 'io_mappings'"
        )
    }
    if not columns:
        raise MappingsError(
            "the Directus table public.io_mappings does not exist: apply the Directus"
            " snapshot (or src/processor/storage/directus_fixture.sql) first"
        )
    missing = ADR_0013_COLUMNS - columns
    if new_columns and missing:
        raise MappingsError(
            f"public.io_mappings has no {', '.join(sorted(missing))}: the applied Directus"
            " schema predates ADR 0013; apply directus/snapshot.yaml first"
        )


async def load_shipped(
    conn: DbConnection, model: str, *, as_model: str | None = None, dry_run: bool = False
) -> LoadReport:
    """Add the shipped rows of `model` (named `as_model` in the table if given) that
    the table lacks; never change a row that is there (module docstring)."""
    target = as_model or model
    rows = [{**r, "model": target} for r in shipped_rows(model)]
    report = LoadReport(target, dry_run=dry_run)
    async with conn.transaction():
        await conn.execute(_LOCK)
        await _require_table(conn, new_columns=True)
        existing = [r for r in await read_rows(conn) if r.get("model") == target]
        by_io = {r.get("io_id"): r for r in existing}
        names = {r.get("name"): r for r in existing}
        for row in rows:
            shipped = parse_mapping(row)
            there = by_io.get(shipped.io_id)
            if there is None and shipped.name in names:
                there = names[shipped.name]  # the name is taken by another io id
            if there is not None:
                differences = _differences(shipped, there)
                if differences:
                    report.kept.append(Kept(shipped, there, differences))
                else:
                    report.unchanged.append(shipped)
                continue
            report.added.append(shipped)
            if not dry_run:
                await conn.execute(_INSERT, *_insert_args(shipped))
    return report


def _insert_args(m: IoMapping) -> tuple[object, ...]:
    labels = msgspec.json.encode({str(k): v for k, v in m.labels}).decode() if m.labels else None
    return (
        m.model,
        m.io_id,
        m.name,
        m.type,
        m.width,
        m.multiplier,
        m.offset,
        m.decimals,
        labels,
        m.unit,
    )


def _differences(shipped: IoMapping, row: dict[str, Any]) -> list[str]:
    try:
        there = parse_mapping(row)
    except MappingError as exc:
        return [f"invalid: {exc}"]
    if there.io_id != shipped.io_id:
        return [f"io_id {there.io_id} (shipped: {shipped.io_id}) has this name"]
    found = []
    for name in _COMPARED:
        a, b = getattr(there, name), getattr(shipped, name)
        if a != b:
            found.append(f"{name} {_show(a)} (shipped: {_show(b)})")
    return found


def _show(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, decimal.Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, tuple):
        return ", ".join(f"{k}={v}" for k, v in value) or "—"
    return str(value)


async def check(conn: DbConnection) -> tuple[MappingTable, list[RowError], dict[str, int]]:
    """The table as the live stage loads it, the rows it skips, and per device model
    (public.devices) how many io ids it decodes."""
    rows = await read_rows(conn)
    table, errors = load_mappings(rows)
    models: dict[str, int] = {}
    if await conn.fetchval("SELECT to_regclass('public.devices') IS NOT NULL"):
        for r in await conn.fetch("SELECT DISTINCT model FROM public.devices ORDER BY model"):
            models[r["model"]] = len(table.resolve(r["model"]).by_io)
    return table, errors, models


async def upgrade(conn: DbConnection, *, dry_run: bool = False) -> list[Upgraded]:
    """Rows of the first vocabulary rewritten in ADR 0013's (module docstring)."""
    changed: list[Upgraded] = []
    async with conn.transaction():
        await conn.execute(_LOCK)
        await _require_table(conn, new_columns=True)
        for row in await read_rows(conn):
            after = _upgraded(row)
            if after == {k: row.get(k) for k in after}:
                continue
            problem = None
            try:
                parse_mapping({**row, **after})
            except MappingError as exc:
                problem = str(exc)
            changed.append(Upgraded(int(row["id"]), {k: row.get(k) for k in after}, after, problem))
            if not dry_run:
                await conn.execute(
                    "UPDATE public.io_mappings SET type = $2, multiplier = $3::numeric,"
                    " offset_value = $4::numeric, width = $5 WHERE id = $1",
                    int(row["id"]),
                    after["type"],
                    after["multiplier"],
                    after["offset_value"],
                    after["width"],
                )
    return changed


def _upgraded(row: dict[str, Any]) -> dict[str, Any]:
    kind = row.get("type")
    new_kind = LEGACY_TYPES.get(kind, kind) if isinstance(kind, str) else kind
    multiplier = _number(row.get("multiplier"))
    offset = _number(row.get("offset_value"))
    width = row.get("width")
    if new_kind == "signed" and width is None and isinstance(row.get("io_id"), int):
        known = shipped_mapping(row.get("model"), row["io_id"])
        if known is not None and known.type == "signed":
            width = known.width
    return {
        "type": new_kind,
        "multiplier": None if multiplier == 1 else multiplier,
        "offset_value": None if offset == 0 else offset,
        "width": width,
    }


def _number(value: object) -> decimal.Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return decimal.Decimal(str(value))
    except decimal.InvalidOperation:
        return None

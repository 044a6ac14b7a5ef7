"""The Directus configuration, read with SQL (read-only), cached, refreshed on change.

Rows come from schema `public` (Directus's); nothing here writes there. A refresh reads
the small configuration tables and rebuilds only when their content hash changed, so an
edit in Directus Studio is picked up within `PROCESSOR_CONFIG_REFRESH_S` without a
restart. Bad rows are skipped and logged with the row that caused them.
"""

from __future__ import annotations

import asyncio
import decimal
import hashlib
import time
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import msgspec
import structlog

from processor.domain.alerts import RouteIndex
from processor.domain.attributes import MappingTable, load_mappings
from processor.domain.config import DomainConfig, RowError, Stage, load_rows
from processor.domain.geofences import GeofenceIndex
from processor.domain.rules import DEFAULT_RULES, EventRules
from processor.domain_runner.attribute_audit import AttributeAudit
from processor.observability.metrics import Metrics
from processor.storage.pool import DbConnection

log = structlog.get_logger(__name__)

MAPPINGS_SQL = "SELECT to_jsonb(m)::text AS m FROM public.io_mappings m ORDER BY m.id"
_decode_mapping = msgspec.json.Decoder(dict[str, Any], float_hook=decimal.Decimal).decode


def mapping_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`io_mappings` rows as dicts (from `MAPPINGS_SQL`'s JSON text, or dicts already)."""
    return [_decode_mapping(r["m"]) if isinstance(r.get("m"), str) else r for r in rows]


_QUERIES = {
    "events": (
        "SELECT id, name, starts_at, ends_at, timezone, status, rules"
        " FROM public.events ORDER BY id"
    ),
    "stages": (
        "SELECT id, event, name, sequence, opens_at, closes_at, status, max_time_s, route"
        " FROM public.stages ORDER BY id"
    ),
    "geofences": (
        "SELECT id, event, stage, kind, name, geometry, direction, radius_m, speed_limit_kmh,"
        " sequence, waypoint_type FROM public.geofences ORDER BY id"
    ),
    "entries": (
        "SELECT e.id, e.event, e.number, e.crew_name, e.class, e.status, d.imei, d.model"
        " FROM public.entries e JOIN public.devices d ON d.id = e.device ORDER BY e.id"
    ),
    "devices": "SELECT imei, model FROM public.devices ORDER BY id",
    # Whole rows as JSON: whichever columns the applied snapshot has (ADR 0013 added
    # some), numeric values exact (read as Decimal by `mapping_rows`).
    "io_mappings": MAPPINGS_SQL,
}


_MANUAL_QUERIES = {
    "timing_records": (
        "SELECT key, stage, entry, geofence, kind, status,"
        " (extract(epoch FROM crossed_at) * 1000)::bigint AS at_ms"
        " FROM public.timing_records WHERE source = 'manual' ORDER BY id"
    ),
    "penalties": (
        "SELECT key, stage, entry, kind, amount_ms, status, reason"
        " FROM public.penalties WHERE source = 'manual' ORDER BY id"
    ),
    "stage_results": (
        "SELECT key, stage, entry, status, total_ms"
        " FROM public.stage_results WHERE source = 'manual' ORDER BY id"
    ),
}


@dataclass(frozen=True)
class ManualRows:
    """Officials' rows (ADR 0004), small and read with the configuration: the domain
    stage needs them for every result, and Directus's tables have no index for it."""

    timing_records: tuple[dict[str, Any], ...] = ()
    penalties: tuple[dict[str, Any], ...] = ()
    stage_results: tuple[dict[str, Any], ...] = ()
    fingerprint: str = ""

    @cached_property
    def gates(self) -> frozenset[tuple[int, int, int]]:
        """(stage, entry, geofence) decided by officials (asked once per crossing)."""
        return frozenset((r["stage"], r["entry"], r["geofence"]) for r in self.timing_records)

    def pairs(self) -> set[tuple[int, int]]:
        """(stage, entry) pairs with any manual row."""
        rows = self.timing_records + self.penalties + self.stage_results
        return {(r["stage"], r["entry"]) for r in rows}

    def of_pair(self, name: str, stage: int, entry: int) -> list[dict[str, Any]]:
        return self._by_pair.get((name, stage, entry), [])

    @cached_property
    def _by_pair(self) -> dict[tuple[str, int, int], list[dict[str, Any]]]:
        """The rows by (collection, stage, entry): settling a batch asks for thousands."""
        found: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
        for name in ("timing_records", "penalties", "stage_results"):
            rows: tuple[dict[str, Any], ...] = getattr(self, name)
            for r in rows:
                found.setdefault((name, r["stage"], r["entry"]), []).append(r)
        return found


@dataclass(frozen=True, slots=True)
class EntryRef:
    """A competitor of an event and the tracker it carries."""

    id: int
    event: int
    number: int
    crew_name: str
    klass: str | None
    status: str
    imei: str
    model: str


@dataclass
class Snapshot:
    """One consistent view of the configuration."""

    config: DomainConfig
    index: GeofenceIndex | None
    entries_by_device: dict[str, list[EntryRef]]
    models: dict[str, str]
    mappings: MappingTable
    errors: list[RowError] = field(default_factory=list)
    fingerprint: str = ""
    manual: ManualRows = field(default_factory=ManualRows)
    # Counts and logs IO values that do not fit their mapping (one per ConfigSource).
    audit: AttributeAudit = field(default_factory=AttributeAudit)

    def entries_of(self, device_id: str) -> list[EntryRef]:
        return self.entries_by_device.get(device_id, [])

    @cached_property
    def _entries(self) -> dict[int, EntryRef]:
        """Every entry by id, built once per snapshot (ranking and the clock ask often)."""
        return {e.id: e for refs in self.entries_by_device.values() for e in refs}

    def entry(self, entry_id: int) -> EntryRef | None:
        return self._entries.get(entry_id)

    def entries_of_event(self, event_id: int) -> list[EntryRef]:
        return sorted(
            (e for e in self._entries.values() if e.event == event_id), key=lambda e: e.id
        )

    def rules_of(self, event_id: int) -> EventRules:
        """The event's rules (the defaults for an event the configuration lacks)."""
        event = self.config.event(event_id)
        return DEFAULT_RULES if event is None else event.rules

    def stages_of_event(self, event_id: int) -> list[Stage]:
        """The event's stages in running order (sequence, then id)."""
        return sorted(
            (s for s in self.config.stages if s.event == event_id),
            key=lambda s: (s.sequence, s.id),
        )

    @cached_property
    def routes(self) -> RouteIndex | None:
        """The stage routes in the geofences' frame, built once per snapshot (None
        without geofences: no frame)."""
        if self.index is None:
            return None
        return RouteIndex(self.config.stages, self.index.projection)


class ConfigSource:
    """Loads the configuration and keeps it fresh."""

    def __init__(self, refresh_s: float, metrics: Metrics | None = None) -> None:
        self.refresh_s = refresh_s
        self.audit = AttributeAudit(metrics)
        self.snapshot: Snapshot | None = None
        # The manual rows before the last change: their pairs need recomputing too.
        self.previous_manual: ManualRows | None = None
        self._checked = 0.0
        self._lock = asyncio.Lock()

    async def current(self, conn: DbConnection) -> Snapshot:
        """The snapshot, re-read when older than the refresh interval and changed (one
        reader at a time: the batch's parts ask concurrently)."""
        async with self._lock:
            return await self._current(conn)

    async def _current(self, conn: DbConnection) -> Snapshot:
        now = time.monotonic()
        if self.snapshot is None or now - self._checked >= self.refresh_s:
            rows = {
                name: [dict(r) for r in await conn.fetch(sql)] for name, sql in _QUERIES.items()
            }
            fingerprint = _fingerprint(rows)
            manual = await load_manual(conn)
            if self.snapshot is not None and fingerprint == self.snapshot.fingerprint:
                if manual.fingerprint != self.snapshot.manual.fingerprint:
                    self.previous_manual = self.snapshot.manual
                    self.snapshot = replace(self.snapshot, manual=manual)
            else:
                # At start, every pair with an officials' row counts as changed: they may
                # have been edited while no domain stage was running.
                self.previous_manual = (
                    ManualRows() if self.snapshot is None else self.snapshot.manual
                )
                self.snapshot = replace(
                    build_snapshot(rows, fingerprint), manual=manual, audit=self.audit
                )
                log.info(
                    "configuration_loaded",
                    geofences=len(self.snapshot.config.geofences),
                    entries=sum(len(v) for v in self.snapshot.entries_by_device.values()),
                    skipped_rows=len(self.snapshot.errors),
                )
                for error in self.snapshot.errors:
                    log.warning("configuration_row_skipped", row=str(error))
            self._checked = now
        return self.snapshot


async def load_manual(conn: DbConnection) -> ManualRows:
    rows = {
        name: tuple(dict(r) for r in await conn.fetch(sql)) for name, sql in _MANUAL_QUERIES.items()
    }
    return ManualRows(**rows, fingerprint=_fingerprint(rows))


def _fingerprint(rows: object) -> str:
    return hashlib.sha256(msgspec.json.encode(rows, enc_hook=str)).hexdigest()


def build_snapshot(rows: dict[str, list[dict[str, Any]]], fingerprint: str = "") -> Snapshot:
    config, errors = load_rows(
        events=rows["events"], stages=rows["stages"], geofences=rows["geofences"]
    )
    index = GeofenceIndex.from_config(config) if config.geofences else None
    entries: dict[str, list[EntryRef]] = {}
    for r in rows["entries"]:
        ref = EntryRef(
            r["id"],
            r["event"],
            r["number"],
            r["crew_name"],
            r["class"],
            r["status"],
            r["imei"],
            r["model"],
        )
        entries.setdefault(ref.imei, []).append(ref)
    models = {r["imei"]: r["model"] for r in rows["devices"]}
    mappings, mapping_errors = load_mappings(mapping_rows(rows["io_mappings"]))
    return Snapshot(
        config, index, entries, models, mappings, [*errors, *mapping_errors], fingerprint
    )

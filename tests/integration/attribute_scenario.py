"""Shared by the attribute tests (integration and faults): databases of their own,
mappings as officials first typed them and as corrected, records shaped like real
Teltonika ones, and the live domain stage run until idle."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import msgspec
from pydantic import SecretStr

from processor.core.settings import Settings, load_settings
from processor.domain_runner.config_source import ConfigSource
from processor.domain_runner.outputs import DomainOutputs
from processor.domain_runner.runner import DomainRunner, notice_settings
from processor.observability.metrics import Metrics
from processor.storage.migrate import migrate
from processor.storage.pool import create_pool
from processor.stream.client import StreamClient, connect
from tests.conftest import ADMIN_URL, DIRECTUS_FIXTURE, _with_database
from tests.entries import entry

MODEL = "FMB920"
IBUTTON = 72069690697717651  # issue 17: above 2**53

# As an official picked them in the Studio before the fix (issue 17): a signed axis as
# unsigned, a voltage with the wrong scale, the iButton as a number, no DTC row.
WRONG: list[dict[str, Any]] = [
    {"io_id": 239, "name": "ignition", "type": "boolean", "multiplier": 1},
    {"io_id": 17, "name": "axis_x", "type": "unsigned", "multiplier": 1},
    {"io_id": 66, "name": "external_voltage", "type": "unsigned", "multiplier": "0.01"},
    {"io_id": 78, "name": "ibutton", "type": "unsigned", "multiplier": 1},
]
RIGHT: list[dict[str, Any]] = [
    {"io_id": 239, "name": "ignition", "type": "boolean", "width": 1},
    {"io_id": 17, "name": "axis_x", "type": "signed", "width": 2, "unit": "mG"},
    {"io_id": 66, "name": "external_voltage", "type": "unsigned", "width": 2,
     "multiplier": "0.001", "unit": "V"},
    {"io_id": 78, "name": "ibutton", "type": "hex", "width": 8},
    {"io_id": 281, "name": "dtc", "type": "ascii"},
    {"io_id": 69, "name": "gnss_status", "type": "enum", "width": 1,
     "labels": {"0": "off", "1": "fix", "2": "no fix", "3": "sleep"}},
    {"io_id": 72, "name": "dallas_1", "type": "signed", "width": 4, "multiplier": "0.1"},
]  # fmt: skip


def io_of(device: int, second: int) -> dict[str, Any]:
    """One record's IO elements as tcp-ingestion sends them (unsigned, sentinels)."""
    dtc = b"P0299,P0101" if second % 3 else b"P0299\x01\\"
    return {
        "239": second % 2,
        "17": (65536 - second % 300) % 65536 if second % 7 else 0x8000,
        "66": 12000 + second % 2000,
        "78": {"__bigint": str(IBUTTON + device)},
        "281": {"__buffer": base64.b64encode(dtc).decode()},
        "69": second % 5,  # 4 has no label: unfit, counted
        "72": 4294967046 - second % 100,
    }


def records(devices: Iterable[str], start_ms: int, seconds: range) -> list[dict[bytes, bytes]]:
    return [
        entry(d, start_ms + s * 1000, io=io_of(n, s))
        for n, d in enumerate(devices)
        for s in seconds
    ]


@asynccontextmanager
async def scratch_databases(count: int) -> AsyncIterator[list[str]]:
    """Databases of their own, migrated, with the Directus fixture; dropped afterwards."""
    names = [f"processor_attrs_{uuid.uuid4().hex[:10]}" for _ in range(count)]
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        urls = []
        for name in names:
            await admin.execute(f'CREATE DATABASE "{name}"')
            url = _with_database(ADMIN_URL, name)
            conn = await asyncpg.connect(url)
            try:
                await migrate(conn, load_settings(database_url=url))
                await conn.execute(DIRECTUS_FIXTURE.read_text())
            finally:
                await conn.close()
            urls.append(url)
        yield urls
    finally:
        for name in names:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def settings_for(base: Settings, url: str, stream: str) -> Settings:
    return base.model_copy(update={"database_url": SecretStr(url), "stream": stream,
                                   "notice_stream": f"{stream}:committed",
                                   "dlq_stream": f"{stream}:dlq"})  # fmt: skip


async def set_mappings(conn: asyncpg.Connection, rows: list[dict[str, Any]]) -> None:
    await conn.execute("DELETE FROM public.io_mappings WHERE model = $1", MODEL)
    for r in rows:
        await conn.execute(
            "INSERT INTO public.io_mappings (model, io_id, name, type, width, multiplier,"
            " offset_value, decimals, labels, unit)"
            " VALUES ($1, $2, $3, $4, $5, $6::numeric, $7::numeric, $8, $9::json, $10)",
            MODEL,
            r["io_id"],
            r["name"],
            r["type"],
            r.get("width"),
            None if r.get("multiplier") is None else str(r["multiplier"]),
            None if r.get("offset_value") is None else str(r["offset_value"]),
            r.get("decimals"),
            None if r.get("labels") is None else msgspec.json.encode(r["labels"]).decode(),
            r.get("unit"),
        )


async def add_devices(conn: asyncpg.Connection, devices: Iterable[str]) -> None:
    await conn.executemany(
        "INSERT INTO public.devices (imei, model) VALUES ($1, $2)",
        [(d, MODEL) for d in devices],
    )


async def run_domain(settings: Settings, metrics: Metrics | None = None) -> Metrics:
    """The live domain stage (the production handler) until no notice is left."""
    metrics = metrics or Metrics()
    domain_settings = notice_settings(settings)
    redis = connect(domain_settings)
    pool = await create_pool(settings)
    try:
        handler = DomainOutputs(ConfigSource(0.0, metrics))
        runner = DomainRunner(
            domain_settings, StreamClient(redis, domain_settings), pool, handler, metrics
        )
        await asyncio.wait_for(runner.run(until_idle=True), 120)
    finally:
        await pool.close()
        await redis.aclose()
    return metrics


async def attributes(conn: asyncpg.Connection) -> list[tuple[str, int, str, str]]:
    rows = await conn.fetch(
        "SELECT device_id, (extract(epoch FROM ts) * 1000)::bigint AS ts_ms,"
        " attributes::text AS a, mapping_version FROM telemetry.position_attributes"
        " ORDER BY device_id, ts"
    )
    return [(r["device_id"], r["ts_ms"], r["a"], r["mapping_version"]) for r in rows]

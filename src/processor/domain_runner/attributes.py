"""Decoded attributes: each window's IO elements, named by the device model's mapping.

Invariant: one row per stored position of a model with mappings
(`telemetry.position_attributes`), carrying the version of the mapping that decoded it
(`MappingTable.resolve(model).version`), rewritten only when that version or the decoded
value changed, so handling a window again writes nothing (DESIGN rule 7). The live
stage and `processor backfill attributes` write through the same statement and the
same encoding, so a backfill converges on exactly what a fresh run would write.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

import msgspec

from processor.core.position import Position
from processor.domain.attributes import AttributeValue, ModelMappings, Unfit, decode_attributes
from processor.domain_runner.config_source import Snapshot
from processor.domain_runner.notices import Window
from processor.storage.pool import DbConnection

UPSERT_SQL = """
INSERT INTO telemetry.position_attributes (device_id, ts, attributes, mapping_version)
SELECT d, to_timestamp(t / 1000.0), a::jsonb, v
FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[]) AS x(d, t, a, v)
ON CONFLICT (device_id, ts) DO UPDATE SET
    attributes = EXCLUDED.attributes, mapping_version = EXCLUDED.mapping_version
WHERE telemetry.position_attributes.mapping_version <> EXCLUDED.mapping_version
   OR telemetry.position_attributes.attributes <> EXCLUDED.attributes
"""
_encoder = msgspec.json.Encoder()


def encode_attributes(attributes: dict[str, AttributeValue]) -> str:
    """JSON text of the attributes. Scaled values are `Decimal`s: written as JSON numbers
    with every digit, in positional notation (`0.000000001`, never `1E-9`), never as
    strings or floats; jsonb keeps them as `numeric`, exactly."""
    for value in attributes.values():
        if type(value) is Decimal:
            return _encoder.encode(
                {k: _number(v) if type(v) is Decimal else v for k, v in attributes.items()}
            ).decode()
    return _encoder.encode(attributes).decode()


def _number(value: Decimal) -> msgspec.Raw:
    return msgspec.Raw(format(value, "f").encode())


def decode_record(
    io: dict[str, Any], mappings: ModelMappings, unfit: list[Unfit]
) -> dict[str, AttributeValue]:
    """One stored record's attributes (`io` read back from the database: byte strings
    are hex text, as the mapping expects)."""
    return decode_attributes(io, mappings.by_io, unfit)


async def upsert_attributes(
    conn: DbConnection,
    devices: Sequence[str],
    times: Sequence[int],
    encoded: Sequence[str],
    versions: Sequence[str],
) -> None:
    if devices:
        await conn.execute(UPSERT_SQL, devices, times, encoded, versions)


async def write_attributes(
    conn: DbConnection, snapshot: Snapshot, windows: Iterable[tuple[Window, Iterable[Position]]]
) -> None:
    """The attributes of every window's own records (of `fixes`), in one statement."""
    devices: list[str] = []
    times: list[int] = []
    encoded: list[str] = []
    versions: list[str] = []
    unfit: list[Unfit] = []
    for window, fixes in windows:
        mappings = snapshot.mappings.resolve(snapshot.models.get(window.device_id))
        if not mappings:
            continue
        for p in fixes:
            if window.start_ms <= p.ts_ms <= window.end_ms:
                devices.append(window.device_id)
                times.append(p.ts_ms)
                attributes = decode_record(p.io, mappings, unfit)
                if unfit:
                    snapshot.audit.record(unfit, window.device_id, p.ts_ms)
                    unfit.clear()
                encoded.append(encode_attributes(attributes))
                versions.append(mappings.version)
    await upsert_attributes(conn, devices, times, encoded, versions)

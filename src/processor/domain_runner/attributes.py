"""Decoded attributes: each window's IO elements, named by the device model's mapping.

Invariant: one row per stored position of a mapped model
(`telemetry.position_attributes`), rewritten only when the mapping or the decoded
value changed, so handling a window again writes nothing (DESIGN rule 7).
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from processor.core.position import Position
from processor.domain.attributes import decode_attributes
from processor.domain_runner.config_source import Snapshot
from processor.domain_runner.notices import Window
from processor.storage.pool import DbConnection

_ATTRIBUTES = """
INSERT INTO telemetry.position_attributes (device_id, ts, attributes, mapping_version)
SELECT d, to_timestamp(t / 1000.0), a::jsonb, $4
FROM unnest($1::text[], $2::bigint[], $3::text[]) AS x(d, t, a)
ON CONFLICT (device_id, ts) DO UPDATE SET
    attributes = EXCLUDED.attributes, mapping_version = EXCLUDED.mapping_version
WHERE telemetry.position_attributes.mapping_version <> EXCLUDED.mapping_version
   OR telemetry.position_attributes.attributes <> EXCLUDED.attributes
"""
_encode = msgspec.json.encode


async def write_attributes(
    conn: DbConnection, snapshot: Snapshot, windows: Iterable[tuple[Window, Iterable[Position]]]
) -> None:
    """The attributes of every window's own records (of `fixes`), in one statement."""
    devices: list[str] = []
    times: list[int] = []
    decoded: list[str] = []
    for window, fixes in windows:
        mappings = snapshot.mappings.for_model(snapshot.models.get(window.device_id))
        if not mappings:
            continue
        for p in fixes:
            if window.start_ms <= p.ts_ms <= window.end_ms:
                devices.append(window.device_id)
                times.append(p.ts_ms)
                # Read back from the database, byte strings in `io` are hex text, as the
                # mapping expects.
                decoded.append(_encode(decode_attributes(p.io, mappings)).decode())  # type: ignore[arg-type]
    if devices:
        await conn.execute(_ATTRIBUTES, devices, times, decoded, snapshot.mappings.version)

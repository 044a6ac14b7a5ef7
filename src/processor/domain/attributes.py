"""Decoded IO attributes: raw Teltonika IO ids → named, typed, scaled values.

The mapping comes from the Directus `io_mappings` collection, per device model with a
wildcard (`*`) fallback. The result is a pure function of the stored `io` and the
mapping rows, so `telemetry.position_attributes` can be rebuilt at any time (rule 7).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import msgspec

AttributeType = Literal["int", "float", "bool", "string", "hex"]
AttributeValue = int | float | bool | str
WILDCARD = "*"


@dataclass(frozen=True, slots=True)
class IoMapping:
    """One `io_mappings` row."""

    model: str  # a device model such as FMB920, or "*" for every model
    io_id: int
    name: str
    type: AttributeType
    multiplier: float | None = None
    unit: str | None = None


class MappingTable:
    """The mappings resolved per model, with a version that changes with any row."""

    def __init__(self, rows: Iterable[IoMapping]) -> None:
        self.rows = sorted(rows, key=lambda r: (r.model, r.io_id, r.name))
        self._by_model: dict[str, dict[str, IoMapping]] = {}
        for row in self.rows:
            self._by_model.setdefault(row.model, {})[str(row.io_id)] = row
        digest = hashlib.sha256(msgspec.json.encode([_fields(r) for r in self.rows]))
        self.version = digest.hexdigest()[:16]

    def for_model(self, model: str | None) -> dict[str, IoMapping]:
        """The model's own mappings over the wildcard ones (an exact model row wins)."""
        merged = dict(self._by_model.get(WILDCARD, {}))
        if model is not None and model != WILDCARD:
            merged.update(self._by_model.get(model, {}))
        return merged


def _fields(row: IoMapping) -> tuple[str, int, str, str, float | None, str | None]:
    return (row.model, row.io_id, row.name, row.type, row.multiplier, row.unit)


def decode_attributes(
    io: Mapping[str, int | str], mappings: Mapping[str, IoMapping]
) -> dict[str, AttributeValue]:
    """Named attributes of one record. `io` is as stored: integers, byte strings as hex.

    Unmapped ids are left out (they stay in `positions.io`); a value that does not fit
    its declared type is left out too rather than guessed.
    """
    out: dict[str, AttributeValue] = {}
    for io_id, raw in io.items():
        mapping = mappings.get(io_id)
        if mapping is None:
            continue
        value = _convert(raw, mapping)
        if value is not None:
            out[mapping.name] = value
    return out


def _convert(raw: int | str, mapping: IoMapping) -> AttributeValue | None:
    kind = mapping.type
    if isinstance(raw, str):  # a byte string, stored as lowercase hex
        if kind == "hex":
            return raw
        if kind == "string":
            try:
                return bytes.fromhex(raw).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                return None
        return None
    if kind == "bool":
        return raw != 0
    if kind == "hex":
        return format(raw, "x") if raw >= 0 else None
    if kind == "string":
        return str(raw)
    scaled: int | float = raw * mapping.multiplier if mapping.multiplier is not None else raw
    if kind == "int":
        return int(scaled) if isinstance(scaled, int) or scaled.is_integer() else None
    return float(scaled)

"""The IO mappings shipped for common Teltonika models (`mappings/teltonika.toml`).

Plain data in the package, read with the standard library (`tomllib`), so a model's
table is one command away (`processor mappings load --model FMB920`) and can be
reviewed like code. The rows are `io_mappings` rows; each is validated with the live
decoder's own `parse_mapping`, so a shipped row can never be one the decoder would skip.

Invariant: `shipped_rows(model)` returns rows that `load_mappings` accepts without a
single error, one per io id and name (tested for every shipped model).
"""

from __future__ import annotations

import functools
import tomllib
from importlib import resources
from typing import Any

from processor.domain.attributes import IoMapping, MappingError, parse_mapping

CATALOGUE = "teltonika.toml"
ROW_FIELDS = (
    "io_id",
    "name",
    "type",
    "width",
    "multiplier",
    "offset_value",
    "decimals",
    "labels",
    "unit",
)


class UnknownModelError(LookupError):
    """A model without shipped mappings."""


@functools.cache
def _catalogue() -> dict[str, Any]:
    text = (resources.files("processor.domain") / "mappings" / CATALOGUE).read_text("utf-8")
    return parse_catalogue(text)


def parse_catalogue(text: str) -> dict[str, Any]:
    """The catalogue document, checked: every group a model names exists, every row has
    only known fields and is a valid mapping."""
    doc = tomllib.loads(text)
    models = doc.get("models", {})
    groups = doc.get("groups", {})
    for model, names in models.items():
        for name in names:
            if name not in groups:
                raise MappingError(f"model {model}: no group {name!r}")
    for name, rows in groups.items():
        for row in rows:
            unknown = set(row) - set(ROW_FIELDS)
            if unknown:
                raise MappingError(f"group {name}, io {row.get('io_id')}: {sorted(unknown)}")
            parse_mapping({"model": "*", **row})
    return doc


def shipped_models() -> list[str]:
    return sorted(_catalogue()["models"])


def shipped_rows(model: str) -> list[dict[str, Any]]:
    """The model's rows, as `io_mappings` rows with `model` set, in io id order."""
    doc = _catalogue()
    if model not in doc["models"]:
        raise UnknownModelError(model)
    rows = [
        {"model": model, **row} for group in doc["models"][model] for row in doc["groups"][group]
    ]
    return sorted(rows, key=lambda r: int(r["io_id"]))


def shipped_mapping(model: str | None, io_id: int) -> IoMapping | None:
    """The shipped mapping of an io id for a model (any shipped model when `model` is
    None or not shipped and all of them agree): what `mappings upgrade` fills a missing
    width from."""
    doc = _catalogue()
    models: list[str] = list(doc["models"])
    candidates = [model] if model is not None and model in models else models
    found: set[IoMapping] = set()
    for name in candidates:
        for row in shipped_rows(name):
            if row["io_id"] == io_id:
                found.add(parse_mapping({**row, "model": "*"}))
    return found.pop() if len(found) == 1 else None

"""Decoded IO attributes: raw Teltonika IO values → named, typed, exact values.

The mappings are the Directus `io_mappings` rows, per device model with a wildcard
(`*`) fallback; the vocabulary is ADR 0013's. The result is a pure function of the
stored `io` and the mapping rows, so `telemetry.position_attributes` can be rebuilt at
any time (DESIGN rule 7) — `processor backfill attributes` does exactly that.

Invariants:

- exact: integers stay Python integers at any size; a scaled value is a
  `decimal.Decimal` computed without rounding (then rounded to `decimals` places when
  the mapping says so), never a binary float;
- a value is what its element's bytes mean: tcp-ingestion sends every fixed-width
  element as its bytes read as an unsigned big-endian integer (contract v1), so the
  sign and the text of an element come from the mapping's `width`, not from the number;
- never silently wrong: a value that does not fit its mapping is left out of the
  attributes and reported as an `Unfit` (the raw value stays in `positions.io`); a
  mapping row that cannot be applied is skipped and reported as a `RowError`, as the
  geometry loader does (`domain/config.py`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, Inexact, InvalidOperation, localcontext
from typing import Any, Literal, get_args

import msgspec

from processor.domain.config import RowError

AttributeType = Literal["unsigned", "signed", "boolean", "enum", "hex", "ascii"]
AttributeValue = int | bool | str | Decimal
UnfitReason = Literal["out_of_range", "wrong_length", "not_boolean", "unknown_label", "empty"]
WILDCARD = "*"
TYPES: tuple[str, ...] = get_args(AttributeType)
WIDTHS = (1, 2, 4, 8)
MAX_DECIMALS = 12
# The types of the first vocabulary (`int`, `float`, `bool`, `string`), read as their
# ADR 0013 equivalents so rows written before it keep working until
# `processor mappings upgrade` rewrites them.
LEGACY_TYPES: dict[str, AttributeType] = {
    "int": "unsigned",
    "float": "unsigned",
    "bool": "boolean",
    "string": "ascii",
}
# Part of every mapping version: a change of the decoder's rules changes the versions,
# so `position_attributes` rows written by an older decoder are visibly stale.
DECODER_VERSION = "2"
_SCALED = frozenset({"unsigned", "signed"})
_NUMERIC = frozenset({"unsigned", "signed", "boolean", "enum"})
_ONE = Decimal(1)
_ZERO = Decimal(0)
_EXACT_PREC = 400  # decimal digits: exact for any value the contract can carry


class MappingError(ValueError):
    """A mapping row that cannot be applied."""


@dataclass(frozen=True, slots=True)
class IoMapping:
    """One valid `io_mappings` row, in the ADR 0013 vocabulary.

    `multiplier`, `offset` and `decimals` (the scale) exist only on `unsigned` and
    `signed`; `labels` only on `enum`. `width` is the element's size in bytes.
    """

    model: str  # a device model such as FMB920, or "*" for every model
    io_id: int
    name: str
    type: AttributeType
    width: int | None = None
    multiplier: Decimal | None = None
    offset: Decimal | None = None
    decimals: int | None = None
    labels: tuple[tuple[int, str], ...] = ()
    unit: str | None = None
    row_id: int | None = None  # the Directus row id, for reports (not part of the version)
    _label_map: dict[int, str] = field(
        default_factory=dict, init=False, compare=False, hash=False, repr=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "_label_map", dict(self.labels))

    @property
    def scaled(self) -> bool:
        return self.multiplier is not None or self.offset is not None or self.decimals is not None

    def label(self, value: int) -> str | None:
        return self._label_map.get(value)

    def describe(self) -> str:
        """The mapping as an official reads it in a report."""
        where = f"row {self.row_id}: " if self.row_id is not None else ""
        width = f"/{self.width}" if self.width is not None else ""
        return f"{where}{self.model} io {self.io_id} → {self.name} ({self.type}{width})"

    def fields(self) -> tuple[object, ...]:
        """What the decoded value depends on (the version hashes these)."""
        return (
            self.model,
            self.io_id,
            self.name,
            self.type,
            self.width,
            None if self.multiplier is None else str(self.multiplier.normalize()),
            None if self.offset is None else str(self.offset.normalize()),
            self.decimals,
            self.labels,
            self.unit,
        )


@dataclass(frozen=True, slots=True)
class Unfit:
    """A value its mapping cannot decode: left out of the attributes, counted, logged."""

    mapping: IoMapping
    reason: UnfitReason
    raw: int | str


# --- parsing rows ---------------------------------------------------------------------


def parse_mapping(row: Mapping[str, Any]) -> IoMapping:
    """A row (SQL, Directus REST or a shipped mapping file) as a mapping, or why not.

    Accepts the first vocabulary's types (`LEGACY_TYPES`) and the old schema's
    `multiplier` default of 1 (= no scale)."""
    model = row.get("model", WILDCARD)
    if model is None:
        model = WILDCARD
    if not isinstance(model, str) or not model.strip():
        raise MappingError("model must be a model name or *")
    io_id = row.get("io_id")
    if isinstance(io_id, bool) or not isinstance(io_id, int) or not 0 <= io_id <= 65535:
        raise MappingError(f"io_id must be an integer 0–65535, not {io_id!r}")
    name = row.get("name")
    if not isinstance(name, str) or not name.strip():
        raise MappingError("name is empty")
    raw_type = row.get("type")
    if not isinstance(raw_type, str):
        raise MappingError("type is missing")
    kind = LEGACY_TYPES.get(raw_type, raw_type)
    if kind not in TYPES:
        raise MappingError(f"unknown type {raw_type!r} (one of {', '.join(TYPES)})")
    width = _optional_int(row.get("width"), "width")
    if width is not None and width not in WIDTHS:
        raise MappingError(f"width must be 1, 2, 4 or 8 bytes, not {width}")
    multiplier = _optional_decimal(row.get("multiplier"), "multiplier")
    if multiplier == _ONE:
        multiplier = None  # the old schema's NOT NULL DEFAULT 1: no scale
    if multiplier is not None and multiplier == _ZERO:
        raise MappingError("multiplier 0 would make every value 0")
    offset = _optional_decimal(row.get("offset_value"), "offset_value")
    if offset is not None and offset == _ZERO:
        offset = None
    decimals = _optional_int(row.get("decimals"), "decimals")
    if decimals is not None and not 0 <= decimals <= MAX_DECIMALS:
        raise MappingError(f"decimals must be 0–{MAX_DECIMALS}, not {decimals}")
    scaled = multiplier is not None or offset is not None or decimals is not None
    if scaled and kind not in _SCALED:
        raise MappingError(
            f"a scale (multiplier, offset_value, decimals) needs type unsigned or signed,"
            f" not {kind}"
        )
    if kind == "signed" and width is None:
        raise MappingError("signed needs the element's width (1, 2, 4 or 8 bytes)")
    labels = _labels(row.get("labels"))
    if kind == "enum" and not labels:
        raise MappingError("enum needs labels: a JSON object of value → label")
    if labels and kind != "enum":
        raise MappingError(f"labels need type enum, not {kind}")
    unit = row.get("unit")
    if unit is not None and not isinstance(unit, str):
        raise MappingError("unit must be text")
    row_id = row.get("id")
    return IoMapping(
        model=model.strip(),
        io_id=io_id,
        name=name.strip(),
        type=kind,  # type: ignore[arg-type]  # checked against TYPES above
        width=width,
        multiplier=multiplier,
        offset=offset,
        decimals=decimals,
        labels=labels,
        unit=unit or None,
        row_id=row_id if isinstance(row_id, int) and not isinstance(row_id, bool) else None,
    )


def _optional_int(value: object, what: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise MappingError(f"{what} must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal | float | str):
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            raise MappingError(f"{what} must be an integer, not {value!r}") from None
        if number.is_finite() and number == number.to_integral_value():
            return int(number)
    raise MappingError(f"{what} must be an integer, not {value!r}")


def _optional_decimal(value: object, what: str) -> Decimal | None:
    """A decimal from SQL (`Decimal`), REST (a string), JSON or TOML (a number)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise MappingError(f"{what} must be a number")
    try:
        # A float's repr is the shortest text that reads back as it: 0.001, not 0.00100…
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))
    except InvalidOperation:
        raise MappingError(f"{what} must be a number, not {value!r}") from None
    if not number.is_finite():
        raise MappingError(f"{what} must be finite")
    return number


def _labels(value: object) -> tuple[tuple[int, str], ...]:
    if value is None or value == "" or value == {}:
        return ()
    if isinstance(value, str):
        try:
            value = msgspec.json.decode(value)
        except msgspec.DecodeError:
            raise MappingError("labels must be a JSON object of value → label") from None
    if not isinstance(value, Mapping):
        raise MappingError("labels must be a JSON object of value → label")
    pairs: list[tuple[int, str]] = []
    for key, label in value.items():
        text = str(key)
        if not text.isascii() or not text.isdigit() or str(int(text)) != text:
            raise MappingError(f"label key {key!r} is not a value (a decimal integer)")
        if not isinstance(label, str) or not label.strip():
            raise MappingError(f"the label of {key} is empty")
        pairs.append((int(text), label))
    return tuple(sorted(pairs))


def load_mappings(rows: Iterable[Mapping[str, Any]]) -> tuple[MappingTable, list[RowError]]:
    """Valid rows as a table; the others skipped and reported with their row id.

    Within one model (or `*`) an io id and an attribute name are each mapped once: of
    two rows, the lower id wins and the other is reported."""
    errors: list[RowError] = []
    kept: list[IoMapping] = []
    io_seen: dict[tuple[str, int], IoMapping] = {}
    name_seen: dict[tuple[str, str], IoMapping] = {}
    ordered = sorted(rows, key=lambda r: (_id_key(r.get("id")), str(r.get("model"))))
    for row in ordered:
        row_id = str(row.get("id", "?"))
        try:
            mapping = parse_mapping(row)
        except MappingError as exc:
            errors.append(RowError("io_mappings", row_id, str(exc)))
            continue
        first = io_seen.get((mapping.model, mapping.io_id))
        if first is not None:
            errors.append(
                RowError(
                    "io_mappings",
                    row_id,
                    f"io {mapping.io_id} of {mapping.model} is mapped already ({first.describe()})",
                )
            )
            continue
        same_name = name_seen.get((mapping.model, mapping.name))
        if same_name is not None:
            errors.append(
                RowError(
                    "io_mappings",
                    row_id,
                    f"name {mapping.name!r} of {mapping.model} is taken ({same_name.describe()})",
                )
            )
            continue
        io_seen[(mapping.model, mapping.io_id)] = mapping
        name_seen[(mapping.model, mapping.name)] = mapping
        kept.append(mapping)
    return MappingTable(kept), errors


def _id_key(value: object) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (0, value)
    return (1, 0)


# --- the table --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelMappings:
    """The mappings one model decodes with, by io id (as `io`'s keys), and their version."""

    by_io: dict[str, IoMapping]
    version: str

    def __bool__(self) -> bool:
        return bool(self.by_io)


class MappingTable:
    """The valid mappings, resolved per model, with versions that change with any row."""

    def __init__(self, rows: Iterable[IoMapping]) -> None:
        self.rows = sorted(rows, key=lambda r: (r.model, r.io_id, r.name))
        self._by_model: dict[str, dict[str, IoMapping]] = {}
        for row in self.rows:
            self._by_model.setdefault(row.model, {})[str(row.io_id)] = row
        self.version = _digest([r.fields() for r in self.rows])
        self._resolved: dict[str | None, ModelMappings] = {}

    @property
    def models(self) -> list[str]:
        """The models with rows of their own (not `*`)."""
        return sorted(m for m in self._by_model if m != WILDCARD)

    def resolve(self, model: str | None) -> ModelMappings:
        """The model's own rows over the wildcard ones: an exact model row wins its io
        id, and a wildcard row whose name a model row uses is left out (one name, one
        value). Memoised: asked for every window."""
        found = self._resolved.get(model)
        if found is None:
            merged = dict(self._by_model.get(WILDCARD, {}))
            if model is not None and model != WILDCARD:
                own = self._by_model.get(model, {})
                names = {m.name for m in own.values()}
                merged = {k: m for k, m in merged.items() if m.name not in names}
                merged.update(own)
            ordered = dict(sorted(merged.items(), key=lambda kv: int(kv[0])))
            version = _digest([m.fields()[1:] for m in ordered.values()]) if ordered else ""
            found = ModelMappings(ordered, version)
            self._resolved[model] = found
        return found

    def for_model(self, model: str | None) -> dict[str, IoMapping]:
        return self.resolve(model).by_io


def _digest(fields: list[tuple[object, ...]]) -> str:
    payload = msgspec.json.encode([DECODER_VERSION, fields])
    return hashlib.sha256(payload).hexdigest()[:16]


# --- decoding -----------------------------------------------------------------------------


def decode_attributes(
    io: Mapping[str, int | str],
    mappings: Mapping[str, IoMapping],
    unfit: list[Unfit] | None = None,
) -> dict[str, AttributeValue]:
    """Named attributes of one record. `io` is as stored: integers, byte strings as
    lowercase hex text.

    Unmapped ids are left out (they stay in `positions.io`); a value that does not fit
    its mapping is left out too, and appended to `unfit` when given."""
    out: dict[str, AttributeValue] = {}
    for io_id, raw in io.items():
        mapping = mappings.get(io_id)
        if mapping is None:
            continue
        value = decode_value(raw, mapping)
        if isinstance(value, Unfit):
            if unfit is not None:
                unfit.append(value)
        else:
            out[mapping.name] = value
    return out


def decode_value(raw: int | str, mapping: IoMapping) -> AttributeValue | Unfit:
    """One element's value under its mapping (see the module's invariants)."""
    kind = mapping.type
    width = mapping.width
    if isinstance(raw, str):  # a byte string (Codec 8 Extended NX), stored as hex
        try:
            data = bytes.fromhex(raw)
        except ValueError:
            return Unfit(mapping, "out_of_range", raw)
        if width is not None and len(data) != width:
            return Unfit(mapping, "wrong_length", raw)
        if kind == "hex":
            return data.hex()
        if kind == "ascii":
            return ascii_text(data)
        if not data:
            return Unfit(mapping, "empty", raw)
        number = int.from_bytes(data, "big")
    elif isinstance(raw, int) and not isinstance(raw, bool):
        number = raw
        if kind in ("hex", "ascii"):
            data_or_none = _int_bytes(raw, width)
            if data_or_none is None:
                return Unfit(mapping, "out_of_range", raw)
            return data_or_none.hex() if kind == "hex" else ascii_text(data_or_none)
    else:  # neither an integer nor a byte string: nothing the contract produces
        return Unfit(mapping, "out_of_range", str(raw))
    if kind == "signed":
        assert width is not None  # parse_mapping requires it
        value = _signed(number, width)
    else:
        value = _unsigned(number, width)
    if value is None:
        return Unfit(mapping, "out_of_range", raw)
    if kind == "boolean":
        if value not in (0, 1):
            return Unfit(mapping, "not_boolean", raw)
        return value == 1
    if kind == "enum":
        label = mapping.label(value)
        return Unfit(mapping, "unknown_label", raw) if label is None else label
    if not mapping.scaled:
        return value
    scaled = _scale(value, mapping)
    return Unfit(mapping, "out_of_range", raw) if scaled is None else scaled


def _unsigned(value: int, width: int | None) -> int | None:
    if value < 0:
        return None
    if width is not None and value >> (8 * width):
        return None
    return value


def _signed(value: int, width: int) -> int | None:
    """Two's complement of a `width`-byte element; a negative value (another producer
    may send one) is taken as already signed when the width holds it."""
    bits = 8 * width
    if 0 <= value < 1 << bits:
        return value - (1 << bits) if value >> (bits - 1) else value
    if -(1 << (bits - 1)) <= value < 0:
        return value
    return None


def _int_bytes(value: int, width: int | None) -> bytes | None:
    """An integer element's bytes: `width` bytes, or as few as hold it."""
    if width is None:
        if value < 0:
            return None
        return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
    bits = 8 * width
    if -(1 << (bits - 1)) <= value < 0:
        value += 1 << bits
    if not 0 <= value < 1 << bits:
        return None
    return value.to_bytes(width, "big")


def _scale(value: int, mapping: IoMapping) -> Decimal | None:
    """value × multiplier + offset, exactly; then `decimals` places, half away from zero.

    The context is far wider than any product of an 8-byte value and a numeric(18, 9)
    multiplier needs, and an inexact step raises instead of rounding: None, never a
    silently rounded value."""
    with localcontext() as ctx:
        ctx.prec = _EXACT_PREC
        ctx.traps[Inexact] = True
        try:
            result = Decimal(value)
            if mapping.multiplier is not None:
                result *= mapping.multiplier
            if mapping.offset is not None:
                result += mapping.offset
            if mapping.decimals is not None:
                ctx.traps[Inexact] = False  # rounding to `decimals` is the point here
                places = Decimal(1).scaleb(-mapping.decimals)
                return result.quantize(places, rounding=ROUND_HALF_UP)
            return plain(result)
        except (Inexact, InvalidOperation):
            return None


def plain(value: Decimal) -> Decimal:
    """The shortest exact form, never in exponent notation: 12.845000 → 12.845, 1E+3 → 1000."""
    with localcontext() as ctx:
        ctx.prec = _EXACT_PREC
        normal = value.normalize()
        if normal.as_tuple().exponent > 0:  # type: ignore[operator]  # finite: an int
            return normal.quantize(_ONE)
        return normal


def same_value(a: object, b: object) -> bool:
    """Equal as jsonb compares them: numbers by value (2 = 2.0 = Decimal('2.00')),
    booleans apart from numbers (true ≠ 1), objects key by key."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | Decimal | float) and isinstance(b, int | Decimal | float):
        return a == b
    return type(a) is type(b) and a == b


def ascii_text(data: bytes) -> str:
    """Bytes as text, losslessly and visibly: printable ASCII as itself, a backslash as
    `\\\\`, any other byte as `\\xNN`; NUL padding at the end (fixed-size text fields) is
    dropped."""
    data = data.rstrip(b"\x00")
    if data.isascii() and all(32 <= b < 127 for b in data) and b"\\" not in data:
        return data.decode("ascii")
    parts = []
    for b in data:
        if b == 0x5C:
            parts.append("\\\\")
        elif 32 <= b < 127:
            parts.append(chr(b))
        else:
            parts.append(f"\\x{b:02x}")
    return "".join(parts)

"""Stream contract v1: one Redis Stream entry in, a `Position` or a `Rejection` out.

The decoder never raises on input: every fault maps to the first applicable reason in
the contract's order (version, size, JSON, sentinels, missing, invalid, time range).
"""

from __future__ import annotations

import binascii
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from processor.core.position import IoValue, Position, Reason, Rejection
from processor.core.timeparse import (
    MAX_REPRESENTABLE_MS,
    MIN_VALID_MS,
    TimeError,
    datetime_ms,
    parse_time_ms,
)

CONTRACT_VERSION = b"1"
MAX_PAYLOAD_BYTES = 64 * 1024
GPS_WEEK_ROLLOVER_MS = 1024 * 7 * 86_400_000
# A record this close to a whole number of 1024-week cycles before its receipt is a
# receiver's week-number rollover, not a buffered record (trackers buffer days, not decades).
ROLLOVER_TOLERANCE_MS = 7 * 86_400_000

_DEVICE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_IO_ID = re.compile(r"0|[1-9][0-9]{0,4}")
_BIGINT = re.compile(r"-?[0-9]+")
_KNOWN_KEYS = (
    "device_id",
    "timestamp",
    "received_at",
    "codec",
    "priority",
    "latitude",
    "longitude",
    "altitude",
    "angle",
    "satellites",
    "speed",
    "event_io_id",
    "io",
)
_REQUIRED = ("device_id", "timestamp", "latitude", "longitude")
_CODECS = frozenset({"8", "8E", "16"})
_decode_json = msgspec.json.Decoder().decode
# Only on the error path: re-parses a document whose number overflowed a double, so
# the overflow is reported as an invalid field (it is valid JSON) rather than malformed.
_decode_json_lenient = msgspec.json.Decoder(float_hook=float).decode


@dataclass(frozen=True, slots=True)
class DecodeOptions:
    """The settings the contract leaves to the deployment."""

    max_future_ms: int = 300_000
    correct_week_rollover: bool = False


class _FaultError(Exception):
    """Internal short-circuit carrying the rejection reason and detail."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def week_rollovers(ts_ms: int, received_ms: int) -> int:
    """How many 1024-week GPS cycles `ts_ms` lags `received_ms` by (0: none, or not close)."""
    lag = received_ms - ts_ms
    cycles = round(lag / GPS_WEEK_ROLLOVER_MS)
    if cycles >= 1 and abs(lag - cycles * GPS_WEEK_ROLLOVER_MS) <= ROLLOVER_TOLERANCE_MS:
        return cycles
    return 0


def entry_time_ms(entry_id: str) -> int:
    """The millisecond part of a stream entry ID (`1777629600412-0`)."""
    head, _, _ = entry_id.partition("-")
    return int(head)


def _range(low: float, high: float) -> Meta:
    return Meta(ge=low, le=high)


class _FastPayload(msgspec.Struct):
    """The common shape of a valid payload, checked in C by msgspec.

    Anything this does not accept goes down the general path, which finds the contract's
    reason; so this only has to be right about what it accepts (tested for equivalence).
    """

    device_id: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}\Z")]
    timestamp: Annotated[datetime, Meta(tz=True)] | int
    latitude: Annotated[float, _range(-90.0, 90.0)]
    longitude: Annotated[float, _range(-180.0, 180.0)]
    received_at: Annotated[datetime, Meta(tz=True)] | int | None = None
    codec: Literal["8", "8E", "16"] | None = None
    priority: Annotated[int, _range(0, 2)] | None = None
    altitude: Annotated[float, _range(-2000.0, 20000.0)] | None = None
    angle: Annotated[float, _range(0.0, 360.0)] | None = None
    satellites: Annotated[int, _range(0, 255)] | None = None
    speed: Annotated[float, _range(0.0, 1000.0)] | None = None
    event_io_id: Annotated[int, _range(0, 65535)] | None = None
    io: dict[str, int | dict[str, str]] | None = None


_decode_fast_payload = msgspec.json.Decoder(_FastPayload).decode
_VALID_IO_IDS: set[str] = set()


def _decode_fast(entry_id: str, payload: bytes, options: DecodeOptions) -> Position | None:
    """The position, or None when the payload needs the general path."""
    try:
        if not payload.isascii():
            payload.decode()  # typed decoding skips unknown keys without checking their UTF-8
        doc = _decode_fast_payload(payload)
        ts = doc.timestamp
        ts_ms = ts if type(ts) is int else datetime_ms(ts)  # type: ignore[arg-type]
        received = doc.received_at
        if received is None:
            received_ms = entry_time_ms(entry_id)
        else:
            received_ms = received if type(received) is int else datetime_ms(received)  # type: ignore[arg-type]
        if not -MAX_REPRESENTABLE_MS <= ts_ms <= MAX_REPRESENTABLE_MS:
            return None
    except (msgspec.MsgspecError, TimeError, RecursionError, UnicodeDecodeError):
        return None
    if not MIN_VALID_MS <= ts_ms <= received_ms + options.max_future_ms:
        return None
    if received_ms - ts_ms > GPS_WEEK_ROLLOVER_MS - ROLLOVER_TOLERANCE_MS:
        return None  # a possible week-number rollover: the general path decides
    io: dict[str, IoValue] = {}
    raw_io = doc.io
    if raw_io:
        valid_ids = _VALID_IO_IDS
        for key, value in raw_io.items():
            if key not in valid_ids:
                if not _IO_ID.fullmatch(key) or int(key) > 65535:
                    return None
                valid_ids.add(key)  # at most 65 536 distinct valid ids: bounded
            if type(value) is dict:
                decoded = _fast_sentinel(value)
                if decoded is None:
                    return None
                io[key] = decoded
            else:
                io[key] = value  # type: ignore[assignment]  # int, by the Struct's type
    satellites = doc.satellites
    latitude = doc.latitude
    longitude = doc.longitude
    return Position(
        device_id=doc.device_id,
        ts_ms=ts_ms,
        received_at_ms=received_ms,
        latitude=latitude,
        longitude=longitude,
        fix_valid=satellites != 0 and not (latitude == 0.0 and longitude == 0.0),
        stream_id=entry_id,
        priority=doc.priority or 0,
        codec=doc.codec,
        altitude=doc.altitude,
        heading=doc.angle,
        speed=doc.speed,
        satellites=satellites,
        event_io_id=doc.event_io_id,
        io=io,
    )


def _fast_sentinel(value: dict[str, str]) -> IoValue | None:
    if len(value) != 1:
        return None
    ((key, text),) = value.items()
    if key == "__bigint":
        if _BIGINT.fullmatch(text) and len(text) < 4000:
            return int(text)
        return None
    if key == "__buffer":
        try:
            return binascii.a2b_base64(text, strict_mode=True)
        except (binascii.Error, ValueError):
            return None
    return None


def decode_entry(
    entry_id: str,
    fields: Mapping[bytes, bytes] | None,
    options: DecodeOptions = DecodeOptions(),
    *,
    fast: bool = True,
) -> Position | Rejection:
    """Decode one stream entry. Total: returns a rejection for any input, never raises.

    `fast=False` skips the typed fast path (tests check that both paths agree).
    """
    try:
        return _decode(entry_id, fields or {}, options, fast)
    except _FaultError as fault:
        return Rejection(fault.reason, fault.detail, entry_id)
    except Exception as exc:  # pragma: no cover - a decoder bug must not stop the stream
        return Rejection(Reason.MALFORMED_JSON, f"undecodable: {type(exc).__name__}", entry_id)


def _decode(
    entry_id: str, fields: Mapping[bytes, bytes], options: DecodeOptions, fast: bool
) -> Position:
    version = fields.get(b"v")
    if version != CONTRACT_VERSION:
        shown = "missing" if version is None else repr(version[:16])
        raise _FaultError(Reason.UNSUPPORTED_VERSION, f"v is {shown}, expected '1'")
    payload = fields.get(b"payload")
    if payload is None:
        raise _FaultError(Reason.MALFORMED_JSON, "entry has no payload field")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise _FaultError(
            Reason.TOO_LARGE, f"payload is {len(payload)} bytes, limit {MAX_PAYLOAD_BYTES}"
        )
    if fast:
        position = _decode_fast(entry_id, payload, options)
        if position is not None:
            return position
    doc = _parse(payload)
    if type(doc) is not dict:
        raise _FaultError(
            Reason.MALFORMED_JSON, f"payload is a JSON {_json_type(doc)}, not an object"
        )

    values: dict[str, Any] = {}
    for key in _KNOWN_KEYS:
        if key in doc:
            raw = doc[key]
            values[key] = _desentinel(raw, key) if type(raw) in (dict, list) else raw
    for key in _REQUIRED:
        if key not in values:
            raise _FaultError(Reason.MISSING_FIELD, f"{key} is required")
    return _validate(entry_id, values, options)


def _parse(payload: bytes) -> Any:
    try:
        return _decode_json(payload)
    except msgspec.ValidationError:
        try:
            return _decode_json_lenient(payload)
        except (msgspec.MsgspecError, RecursionError, UnicodeDecodeError) as exc:
            raise _FaultError(Reason.MALFORMED_JSON, _short(exc)) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise _FaultError(Reason.MALFORMED_JSON, _short(exc)) from None
    except RecursionError:
        raise _FaultError(Reason.MALFORMED_JSON, "JSON nested too deeply") from None


def _desentinel(obj: dict[str, Any] | list[Any], path: str) -> Any:
    """Replace sentinels in a known key's value, depth-first, without recursion limits."""
    root: dict[str, Any] | list[Any]
    if isinstance(obj, list):
        root = list(obj)
    else:
        decoded = _sentinel(obj, path)
        if decoded is not _NOT_SENTINEL:
            return decoded
        root = dict(obj)
    stack: list[tuple[dict[str, Any] | list[Any], str]] = [(root, path)]
    while stack:
        container, where = stack.pop()
        shallow = "." not in where  # name the first level (`io.239`), not the whole path
        items: Iterable[tuple[Any, Any]] = (
            container.items() if isinstance(container, dict) else enumerate(container)
        )
        for k, v in list(items):
            if isinstance(v, dict):
                inner = _sentinel(v, (f"{where}.{k}" if shallow else where))
                if inner is _NOT_SENTINEL:
                    copy = dict(v)
                    container[k] = copy
                    stack.append((copy, (f"{where}.{k}" if shallow else where)))
                else:
                    container[k] = inner
            elif isinstance(v, list):
                copy_list = list(v)
                container[k] = copy_list
                stack.append((copy_list, (f"{where}.{k}" if shallow else where)))
    return root


_NOT_SENTINEL = object()


def _sentinel(obj: dict[str, Any], where: str) -> Any:
    if len(obj) != 1:
        return _NOT_SENTINEL
    ((key, value),) = obj.items()
    if not key.startswith("__"):
        return _NOT_SENTINEL
    if key == "__bigint":
        if type(value) is str and _BIGINT.fullmatch(value):
            try:
                return int(value)
            except ValueError:  # more digits than Python converts
                raise _FaultError(Reason.INVALID_SENTINEL, f"{where}: __bigint too long") from None
        raise _FaultError(Reason.INVALID_SENTINEL, f"{where}: __bigint is not decimal digits")
    if key == "__buffer":
        if type(value) is str:
            try:
                return binascii.a2b_base64(value, strict_mode=True)
            except (binascii.Error, ValueError):
                pass
        raise _FaultError(Reason.INVALID_SENTINEL, f"{where}: __buffer is not standard base64")
    raise _FaultError(Reason.UNKNOWN_SENTINEL, f"{where}: unknown sentinel {key[:32]!r}")


def _validate(entry_id: str, v: dict[str, Any], options: DecodeOptions) -> Position:
    device_id = v["device_id"]
    if type(device_id) is not str or not _DEVICE_ID.fullmatch(device_id):
        raise _FaultError(Reason.INVALID_FIELD, "device_id must be 1-64 chars of [A-Za-z0-9_.:-]")
    ts_ms = _time(v["timestamp"], "timestamp")
    received = v.get("received_at")
    received_ms = entry_time_ms(entry_id) if received is None else _time(received, "received_at")
    latitude = _number(v["latitude"], "latitude", -90.0, 90.0)
    longitude = _number(v["longitude"], "longitude", -180.0, 180.0)
    altitude = _opt_number(v.get("altitude"), "altitude", -2000.0, 20000.0)
    heading = _opt_number(v.get("angle"), "angle", 0.0, 360.0)
    speed = _opt_number(v.get("speed"), "speed", 0.0, 1000.0)
    priority = _opt_int(v.get("priority"), "priority", 0, 2)
    satellites = _opt_int(v.get("satellites"), "satellites", 0, 255)
    event_io_id = _opt_int(v.get("event_io_id"), "event_io_id", 0, 65535)
    codec = v.get("codec")
    if codec is not None and (type(codec) is not str or codec not in _CODECS):
        raise _FaultError(Reason.INVALID_FIELD, "codec must be one of '8', '8E', '16'")
    io = _io(v.get("io"))

    rollovers = week_rollovers(ts_ms, received_ms)
    if rollovers:
        if not options.correct_week_rollover:
            raise _FaultError(
                Reason.TIMESTAMP_OUT_OF_RANGE,
                f"timestamp is {rollovers}x1024 GPS weeks before received_at "
                "(week-number rollover; PROCESSOR_CORRECT_WEEK_ROLLOVER=true corrects it)",
            )
        ts_ms += rollovers * GPS_WEEK_ROLLOVER_MS
    if ts_ms < MIN_VALID_MS:
        raise _FaultError(Reason.TIMESTAMP_OUT_OF_RANGE, "timestamp before 2000-01-01")
    if ts_ms > received_ms + options.max_future_ms:
        raise _FaultError(
            Reason.TIMESTAMP_OUT_OF_RANGE,
            f"timestamp {(ts_ms - received_ms) / 1000:.3f} s after received_at "
            f"(limit {options.max_future_ms / 1000:g} s)",
        )
    fix_valid = satellites != 0 and not (latitude == 0.0 and longitude == 0.0)
    return Position(
        device_id=device_id,
        ts_ms=ts_ms,
        received_at_ms=received_ms,
        latitude=latitude,
        longitude=longitude,
        fix_valid=fix_valid,
        stream_id=entry_id,
        priority=0 if priority is None else priority,
        codec=codec,
        altitude=altitude,
        heading=heading,
        speed=speed,
        satellites=satellites,
        event_io_id=event_io_id,
        io=io,
    )


def _time(value: Any, name: str) -> int:
    if value is None:
        raise _FaultError(Reason.INVALID_FIELD, f"{name} is null")
    try:
        return parse_time_ms(value)
    except TimeError as exc:
        raise _FaultError(Reason.INVALID_FIELD, f"{name}: {exc}") from None


def _number(value: Any, name: str, low: float, high: float) -> float:
    kind = type(value)
    if kind is float:
        if not math.isfinite(value):
            raise _FaultError(Reason.INVALID_FIELD, f"{name} is not finite")
    elif kind is int:
        value = float(value) if abs(value) < 1e300 else math.inf
    elif value is None:
        raise _FaultError(Reason.INVALID_FIELD, f"{name} is null")
    else:
        raise _FaultError(Reason.INVALID_FIELD, f"{name} must be a number")
    if not low <= value <= high:
        raise _FaultError(Reason.INVALID_FIELD, f"{name} {value:g} outside {low:g}..{high:g}")
    return float(value)


def _opt_number(value: Any, name: str, low: float, high: float) -> float | None:
    return None if value is None else _number(value, name, low, high)


def _opt_int(value: Any, name: str, low: int, high: int) -> int | None:
    if value is None:
        return None
    if type(value) is not int:
        raise _FaultError(Reason.INVALID_FIELD, f"{name} must be an integer")
    if not low <= value <= high:
        raise _FaultError(Reason.INVALID_FIELD, f"{name} {value} outside {low}..{high}")
    return int(value)


def _io(value: Any) -> dict[str, IoValue]:
    if value is None:
        return {}
    if type(value) is not dict:
        raise _FaultError(Reason.INVALID_FIELD, "io must be an object")
    for key, item in value.items():
        if not _IO_ID.fullmatch(key) or int(key) > 65535:
            raise _FaultError(Reason.INVALID_FIELD, f"io id {key[:16]!r} is not a decimal 0..65535")
        kind = type(item)
        if kind is not int and kind is not bytes:
            raise _FaultError(Reason.INVALID_FIELD, f"io {key} must be an integer or byte string")
    return value


def _json_type(doc: Any) -> str:
    return {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(doc), "null"
    )


def _short(exc: BaseException) -> str:
    return str(exc)[:200] or type(exc).__name__

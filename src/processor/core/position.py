"""The immutable record every layer passes around, and the reasons a record is refused."""

from __future__ import annotations

from enum import StrEnum

import msgspec

IoValue = int | bytes


class Position(msgspec.Struct, frozen=True, gc=False):
    """One decoded AVL record, exactly as it will be stored.

    Times are integer milliseconds since the Unix epoch (UTC): the contract keeps
    millisecond precision, and integers are cheaper than datetimes on the hot path.
    """

    device_id: str
    ts_ms: int
    received_at_ms: int
    latitude: float
    longitude: float
    fix_valid: bool
    stream_id: str
    priority: int = 0
    codec: str | None = None
    altitude: float | None = None
    heading: float | None = None
    speed: float | None = None
    satellites: int | None = None
    event_io_id: int | None = None
    io: dict[str, IoValue] = msgspec.field(default_factory=dict)


class Reason(StrEnum):
    """Why an entry ends in the dead-letter stream (contract v1 plus processor-side causes)."""

    UNSUPPORTED_VERSION = "unsupported_version"
    TOO_LARGE = "too_large"
    MALFORMED_JSON = "malformed_json"
    UNKNOWN_SENTINEL = "unknown_sentinel"
    INVALID_SENTINEL = "invalid_sentinel"
    MISSING_FIELD = "missing_field"
    INVALID_FIELD = "invalid_field"
    TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
    MAX_DELIVERIES = "max_deliveries"
    STORAGE_REJECTED = "storage_rejected"


class Rejection(msgspec.Struct, frozen=True, gc=False):
    """An entry that cannot become a position; never retried, always dead-lettered."""

    reason: Reason
    detail: str
    stream_id: str

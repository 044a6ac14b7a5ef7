"""Contract times (ISO-8601 with offset, epoch milliseconds, `__bigint`) to epoch milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import msgspec

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
MIN_VALID_MS = 946_684_800_000  # 2000-01-01T00:00:00Z: the contract's lower bound
# Largest millisecond value Python (and so every tool here) can turn into a datetime.
MAX_REPRESENTABLE_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


class TimeError(ValueError):
    """A value that is not a contract time."""


def parse_time_ms(value: object) -> int:
    """Epoch milliseconds of a contract time value (sentinels already decoded)."""
    if type(value) is int:
        if not -MAX_REPRESENTABLE_MS <= value <= MAX_REPRESENTABLE_MS:
            raise TimeError("epoch milliseconds out of the representable range")
        return value
    if type(value) is str:
        try:
            # RFC 3339 first, exactly as the decoder's typed fast path parses it, so both
            # paths agree to the millisecond; then the wider ISO-8601 forms.
            parsed = msgspec.convert(value, _AwareDatetime)
        except msgspec.ValidationError:
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                raise TimeError("not an ISO-8601 time") from None
        if parsed.tzinfo is None or parsed.utcoffset() is None:
            raise TimeError("ISO-8601 time without an offset")
        ms = datetime_ms(parsed)
        if not -MAX_REPRESENTABLE_MS <= ms <= MAX_REPRESENTABLE_MS:
            raise TimeError("time out of the representable range")
        return ms
    raise TimeError("a time must be an ISO-8601 string or integer epoch milliseconds")


def datetime_ms(value: datetime) -> int:
    """Epoch milliseconds of an aware datetime, floored (sub-millisecond digits dropped)."""
    ms: int = (value - EPOCH) // _ONE_MS
    return ms


def ms_to_datetime(ms: int) -> datetime:
    """UTC datetime of epoch milliseconds."""
    return EPOCH + timedelta(milliseconds=ms)


def format_ms(ms: int) -> str:
    """`2026-05-01T10:00:00.000Z`: the contract's canonical rendering."""
    return ms_to_datetime(ms).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"

"""Contract times to epoch milliseconds and back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.core.timeparse import (
    MAX_REPRESENTABLE_MS,
    MIN_VALID_MS,
    TimeError,
    format_ms,
    ms_to_datetime,
    parse_time_ms,
)

T0 = 1_777_629_600_000  # 2026-05-01T10:00:00Z


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-05-01T10:00:00.000Z", T0),
        ("2026-05-01T10:00:00Z", T0),
        ("2026-05-01T10:00:00+00:00", T0),
        ("2026-05-01T10:00:00-00:00", T0),
        ("2026-05-01T12:00:00.000+02:00", T0),
        ("2026-05-01T15:45:00+05:45", T0),
        ("2026-05-01T04:30:00-05:30", T0),
        ("2026-05-02T00:00:00+14:00", T0),
        ("2026-04-30T22:00:00-12:00", T0),
        ("2026-05-01T10:00:00.412Z", T0 + 412),
        ("2026-05-01T12:00:00.412+02:00", T0 + 412),
        ("2026-05-01T10:00:00.5Z", T0 + 500),
        ("2000-01-01T00:00:00Z", MIN_VALID_MS),
        ("2000-01-01T01:00:00+01:00", MIN_VALID_MS),
        ("1970-01-01T00:00:00Z", 0),
    ],
)
def test_iso_with_offset(text: str, expected: int) -> None:
    assert parse_time_ms(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-05-01T10:00:00.000999Z", T0),
        ("2026-05-01T10:00:00.412999Z", T0 + 412),
        ("2026-05-01T10:00:00.999999+02:00", T0 - 2 * 3_600_000 + 999),
        # Before the epoch the floor goes down, not toward zero.
        ("1969-12-31T23:59:59.999500Z", -1),
        ("1969-12-31T23:59:59.000001Z", -1000),
    ],
)
def test_sub_millisecond_digits_are_floored(text: str, expected: int) -> None:
    assert parse_time_ms(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2026-05-01T10:00:00",
        "2026-05-01T10:00:00.000",
        "2026-05-01",
    ],
)
def test_naive_time_is_rejected(text: str) -> None:
    with pytest.raises(TimeError, match="offset"):
        parse_time_ms(text)


@pytest.mark.parametrize(
    "text",
    ["", "yesterday", "2026-13-01T10:00:00Z", "2026-05-01T25:00:00Z", "2026-05-01T10:00:00+25:00"],
)
def test_garbage_string_is_rejected(text: str) -> None:
    with pytest.raises(TimeError, match="ISO-8601"):
        parse_time_ms(text)


@pytest.mark.parametrize(
    "value",
    [True, False, 1.0, float(T0), None, b"2026-05-01T10:00:00Z", [T0], {"__bigint": str(T0)}],
)
def test_non_time_types_are_rejected(value: object) -> None:
    with pytest.raises(TimeError):
        parse_time_ms(value)


def test_time_error_is_a_value_error() -> None:
    assert issubclass(TimeError, ValueError)


@pytest.mark.parametrize(
    "value", [0, -1, T0, MIN_VALID_MS, MAX_REPRESENTABLE_MS, -MAX_REPRESENTABLE_MS]
)
def test_epoch_milliseconds_pass_through(value: int) -> None:
    result = parse_time_ms(value)
    assert result == value
    assert type(result) is int


@pytest.mark.parametrize("value", [MAX_REPRESENTABLE_MS + 1, -MAX_REPRESENTABLE_MS - 1, 2**64])
def test_epoch_milliseconds_beyond_representable_are_rejected(value: int) -> None:
    with pytest.raises(TimeError, match="representable"):
        parse_time_ms(value)


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (T0, "2026-05-01T10:00:00.000Z"),
        (T0 + 412, "2026-05-01T10:00:00.412Z"),
        (T0 + 7, "2026-05-01T10:00:00.007Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
        (-1000, "1969-12-31T23:59:59.000Z"),
        (MIN_VALID_MS, "2000-01-01T00:00:00.000Z"),
        (MAX_REPRESENTABLE_MS, "9999-12-31T23:59:59.999Z"),
    ],
)
def test_format_ms(ms: int, text: str) -> None:
    assert format_ms(ms) == text


def test_ms_to_datetime_is_utc_with_millisecond_precision() -> None:
    moment = ms_to_datetime(T0 + 412)
    assert moment == datetime(2026, 5, 1, 10, 0, 0, 412_000, tzinfo=UTC)
    assert moment.utcoffset() == timedelta(0)
    assert ms_to_datetime(-1) == datetime(1969, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC)
    assert ms_to_datetime(MAX_REPRESENTABLE_MS) == datetime(
        9999, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC
    )


@settings(max_examples=200, deadline=None, database=None)
@given(st.integers(MIN_VALID_MS, MAX_REPRESENTABLE_MS))
def test_format_and_parse_round_trip(ms: int) -> None:
    text = format_ms(ms)
    assert text.endswith("Z")
    assert len(text) == len("2026-05-01T10:00:00.000Z")
    assert parse_time_ms(text) == ms
    assert parse_time_ms(ms_to_datetime(ms).isoformat()) == ms

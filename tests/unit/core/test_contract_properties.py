"""Property tests of the stream contract decoder.

(a) every valid record, encoded the way tcp-ingestion encodes it, decodes back to exactly
    the values it was built from;
(b) the decoder is total: any input gives a `Position` or a `Rejection`, never an
    exception and never its internal catch-all;
(c) targeted examples at the edges of the JSON parser and of the contract's types.
"""

from __future__ import annotations

import base64
import json
import math
import re
import string
from datetime import UTC, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.core.contract import MAX_PAYLOAD_BYTES, decode_entry, week_rollovers
from processor.core.position import Position, Reason, Rejection
from processor.core.timeparse import MIN_VALID_MS, ms_to_datetime

# No example database: nothing is written into the working tree; a failure prints its example.
_BASE = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

ENTRY_ID = "1777629600412-0"
ENTRY_MS = 1_777_629_600_412
MAX_FUTURE_MS = 300_000  # the contract's default PROCESSOR_MAX_FUTURE_S
YEAR_9000_MS = 221_845_392_000_000  # 9000-01-01T00:00:00Z: leaves room for any UTC offset
YEAR_2026_MS = 1_767_225_600_000
YEAR_2027_MS = 1_798_761_600_000

# From the contract, independently of the decoder's own tables.
KNOWN_KEYS = (
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
DEVICE_ALPHABET = string.ascii_letters + string.digits + "_.:-"
DECODE_REASONS = frozenset(Reason) - {Reason.MAX_DELIVERIES, Reason.STORAGE_REJECTED}
# decode_entry turns an unexpected exception into a rejection with this detail prefix; a
# decoder that is total by design never gets there.
CATCH_ALL_PREFIX = "undecodable"


# --- helpers -------------------------------------------------------------------------------


def _entry(payload: bytes, v: bytes = b"1") -> dict[bytes, bytes]:
    return {b"v": v, b"payload": payload}


def _dumps(value: Any, *, ensure_ascii: bool = True) -> bytes:
    text = json.dumps(value, allow_nan=False, ensure_ascii=ensure_ascii)
    # surrogatepass: a lone surrogate becomes invalid UTF-8, which is input the decoder must take.
    return text.encode("utf-8", "surrogatepass")


def _typed(value: Any) -> Any:
    """`value` with every scalar paired with its type: 112 != 112.0, 1 != True, 0.0 != -0.0."""
    if isinstance(value, dict):
        return {key: _typed(item) for key, item in value.items()}
    if isinstance(value, float):
        return ("float", value.hex())
    return (type(value).__name__, value)


def _assert_contract_invariants(position: Position) -> None:
    """What every accepted record satisfies, whatever its input was."""
    assert re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", position.device_id)
    assert type(position.ts_ms) is int
    assert type(position.received_at_ms) is int
    assert MIN_VALID_MS <= position.ts_ms <= position.received_at_ms + MAX_FUTURE_MS
    for name, low, high, optional in (
        ("latitude", -90.0, 90.0, False),
        ("longitude", -180.0, 180.0, False),
        ("altitude", -2000.0, 20000.0, True),
        ("heading", 0.0, 360.0, True),
        ("speed", 0.0, 1000.0, True),
    ):
        number = getattr(position, name)
        if optional and number is None:
            continue
        assert type(number) is float, name
        assert math.isfinite(number), name
        assert low <= number <= high, name
    for name, low, high in (
        ("priority", 0, 2),
        ("satellites", 0, 255),
        ("event_io_id", 0, 65535),
    ):
        integer = getattr(position, name)
        if integer is None and name != "priority":
            continue
        assert type(integer) is int, name
        assert low <= integer <= high, name
    assert position.codec in (None, "8", "8E", "16")
    for key, value in position.io.items():
        assert re.fullmatch(r"0|[1-9][0-9]{0,4}", key), key
        assert int(key) <= 65535
        assert type(value) in (int, bytes), key
    no_fix = position.satellites == 0 or (position.latitude == 0 and position.longitude == 0)
    assert position.fix_valid is (not no_fix)


def _checked(result: object, entry_id: str = ENTRY_ID) -> Position | Rejection:
    assert isinstance(result, Position | Rejection), f"decoder returned {result!r}"
    if isinstance(result, Rejection):
        assert result.reason in DECODE_REASONS
        assert result.detail.strip()
        assert not result.detail.startswith(CATCH_ALL_PREFIX), (
            f"the decoder raised internally: {result.detail}"
        )
        assert result.stream_id == entry_id
    else:
        assert result.stream_id == entry_id
        _assert_contract_invariants(result)
    return result


def _rejected(result: object, reason: Reason) -> Rejection:
    checked = _checked(result)
    assert isinstance(checked, Rejection), f"expected {reason}, got {checked!r}"
    assert checked.reason is reason, checked.detail
    return checked


# --- strategies ----------------------------------------------------------------------------

_SENTINEL_KEYS = st.sampled_from(["__bigint", "__buffer", "__", "__x", "__date", "__BIGINT"])


def _sentinel_like(children: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Single-key objects that are, or look like, sentinels: valid, malformed or unknown."""
    return st.one_of(
        st.builds(
            lambda digits: {"__bigint": digits}, st.from_regex(r"-?[0-9]{1,25}", fullmatch=True)
        ),
        st.builds(lambda raw: {"__buffer": base64.b64encode(raw).decode()}, st.binary(max_size=16)),
        st.dictionaries(_SENTINEL_KEYS, children | st.text(max_size=12), min_size=1, max_size=1),
    )


_JSON_SCALARS: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=16),
)

JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    _JSON_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8) | _SENTINEL_KEYS, children, max_size=4),
        _sentinel_like(children),
    ),
    max_leaves=16,
)


def _iso(draw: st.DrawFn, ms: int) -> str:
    """An ISO-8601 string with an explicit offset for `ms`, maybe with sub-millisecond digits."""
    offset_min = draw(st.integers(-(23 * 60 + 59), 23 * 60 + 59) | st.sampled_from([0, 120, -300]))
    extra_us = draw(st.integers(0, 999) | st.just(0))
    local = (ms_to_datetime(ms) + timedelta(microseconds=extra_us)).astimezone(
        timezone(timedelta(minutes=offset_min))
    )
    specs = ["microseconds"] if extra_us else ["milliseconds", "microseconds"]
    if ms % 1000 == 0 and not extra_us:
        specs.append("seconds")
    text = local.isoformat(timespec=draw(st.sampled_from(specs)))
    if offset_min == 0 and draw(st.booleans()):
        text = text.removesuffix("+00:00") + "Z"
    return text


def _time_value(draw: st.DrawFn, ms: int) -> Any:
    kind = draw(st.sampled_from(["iso", "int", "bigint"]))
    if kind == "int":
        return ms
    if kind == "bigint":
        return {"__bigint": str(ms)}
    return _iso(draw, ms)


def _number(low: float, high: float) -> st.SearchStrategy[int | float]:
    return st.one_of(
        st.floats(low, high, allow_nan=False, allow_infinity=False),
        st.integers(int(low), int(high)),
        st.sampled_from([low, high]),
    )


_IO_INTS = st.one_of(
    st.integers(),
    st.integers(-(2**64), 2**64),
    st.integers(-(2**300), 2**300),
    st.sampled_from([0, 2**53, 2**53 + 1, -(2**53) - 1, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)]),
)


def _io_json(draw: st.DrawFn, value: int | bytes) -> Any:
    if isinstance(value, bytes):
        return {"__buffer": base64.b64encode(value).decode()}
    if abs(value) > 2**53 or draw(st.booleans()):
        return {"__bigint": str(value)}
    return value


@st.composite
def valid_records(draw: st.DrawFn) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(entry id, payload object, the decoded values keyed by `Position` field name)."""
    entry_ms = draw(
        st.integers(MIN_VALID_MS, YEAR_9000_MS) | st.integers(YEAR_2026_MS, YEAR_2027_MS)
    )
    entry_id = f"{entry_ms}-{draw(st.integers(0, 2**32))}"
    payload: dict[str, Any] = {}
    record: dict[str, Any] = {"stream_id": entry_id}

    def optional(key: str, strategy: st.SearchStrategy[Any]) -> Any:
        mode = draw(st.sampled_from(["absent", "null", "value", "value"]))
        if mode == "absent":
            return None
        if mode == "null":
            payload[key] = None
            return None
        value = draw(strategy)
        payload[key] = value
        return value

    record["device_id"] = payload["device_id"] = draw(
        st.text(DEVICE_ALPHABET, min_size=1, max_size=64)
    )

    received_ms = optional(
        "received_at",
        st.integers(MIN_VALID_MS, YEAR_9000_MS) | st.integers(YEAR_2026_MS, YEAR_2027_MS),
    )
    if received_ms is None:
        received_ms = entry_ms
    else:
        payload["received_at"] = _time_value(draw, received_ms)
    record["received_at_ms"] = received_ms

    latest = received_ms + MAX_FUTURE_MS
    ts_ms = draw(
        (
            st.integers(MIN_VALID_MS, latest)
            | st.integers(max(MIN_VALID_MS, received_ms - 3_600_000), latest)
            | st.sampled_from([MIN_VALID_MS, latest])
        )
        # Within a week of a whole number of 1024-week cycles before receipt, the record is
        # a week-number rollover and rightly rejected (its own tests cover that): not valid.
        .filter(lambda ts: week_rollovers(ts, received_ms) == 0)
    )
    record["ts_ms"] = ts_ms
    payload["timestamp"] = _time_value(draw, ts_ms)

    latitude = draw(_number(-90, 90) | st.just(0))
    longitude = draw(_number(-180, 180) | st.just(0))
    payload["latitude"], payload["longitude"] = latitude, longitude
    record["latitude"], record["longitude"] = float(latitude), float(longitude)

    for key, field, low, high in (
        ("altitude", "altitude", -2000, 20000),
        ("angle", "heading", 0, 360),
        ("speed", "speed", 0, 1000),
    ):
        value = optional(key, _number(low, high))
        record[field] = None if value is None else float(value)

    priority = optional("priority", st.integers(0, 2))
    record["priority"] = 0 if priority is None else priority
    record["satellites"] = optional("satellites", st.integers(0, 255))
    record["event_io_id"] = optional("event_io_id", st.integers(0, 65535))
    record["codec"] = optional("codec", st.sampled_from(["8", "8E", "16"]))

    io: dict[str, int | bytes] | None = optional(
        "io",
        st.dictionaries(
            st.integers(0, 65535).map(str) | st.sampled_from(["0", "65535"]),
            _IO_INTS | st.binary(max_size=48),
            max_size=10,
        ),
    )
    if io is not None:
        payload["io"] = {key: _io_json(draw, value) for key, value in io.items()}
    record["io"] = {} if io is None else io

    no_fix = record["satellites"] == 0 or (latitude == 0 and longitude == 0)
    record["fix_valid"] = not no_fix

    # Unknown keys are ignored and not inspected, even when they hold bad sentinels.
    unknown = draw(
        st.dictionaries(
            st.text(max_size=12).filter(lambda key: key not in KNOWN_KEYS),
            JSON_VALUES,
            max_size=3,
        )
    )
    payload.update(unknown)
    items = draw(st.permutations(list(payload.items())))
    return entry_id, dict(items), record


@st.composite
def mutated_records(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid record with a few keys replaced by arbitrary JSON values or removed."""
    entry_id, payload, _ = draw(valid_records())
    for key in draw(st.lists(st.sampled_from(KNOWN_KEYS), min_size=1, max_size=3, unique=True)):
        if draw(st.integers(0, 4)) == 0:
            payload.pop(key, None)
        else:
            payload[key] = draw(JSON_VALUES)
    return entry_id, _dumps(payload, ensure_ascii=draw(st.booleans()))


# --- (a) valid records round-trip ----------------------------------------------------------


@settings(_BASE, max_examples=400)
@given(valid_records())
def test_valid_record_decodes_to_what_it_was_built_from(
    case: tuple[str, dict[str, Any], dict[str, Any]],
) -> None:
    entry_id, payload, record = case
    raw = _dumps(payload)
    assert len(raw) <= MAX_PAYLOAD_BYTES, "strategy bug: payload over the limit"

    result = _checked(decode_entry(entry_id, _entry(raw)), entry_id)

    assert isinstance(result, Position), f"rejected a valid record: {result!r}"
    assert set(record) == set(Position.__struct_fields__), "the record must cover every field"
    for name, want in record.items():
        got = getattr(result, name)
        assert _typed(got) == _typed(want), f"{name}: got {got!r}, built {want!r}"


# --- (b) the decoder is total ---------------------------------------------------------------


@settings(_BASE, max_examples=300)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_payload(payload: bytes) -> None:
    _checked(decode_entry(ENTRY_ID, _entry(payload)))


@settings(_BASE, max_examples=150)
@given(valid_records(), st.data())
def test_truncated_payload_is_malformed_json(
    case: tuple[str, dict[str, Any], dict[str, Any]], data: st.DataObject
) -> None:
    entry_id, payload, _ = case
    raw = _dumps(payload)
    cut = data.draw(st.integers(0, len(raw) - 1))
    result = decode_entry(entry_id, _entry(raw[:cut]))
    assert isinstance(result, Rejection)
    assert result.reason is Reason.MALFORMED_JSON, result.detail
    _checked(result, entry_id)


@settings(_BASE, max_examples=300)
@given(JSON_VALUES, st.booleans())
def test_arbitrary_json_payload(value: Any, ensure_ascii: bool) -> None:
    result = _checked(decode_entry(ENTRY_ID, _entry(_dumps(value, ensure_ascii=ensure_ascii))))
    if type(value) is not dict:
        assert isinstance(result, Rejection)
        assert result.reason is Reason.MALFORMED_JSON


@settings(_BASE, max_examples=400)
@given(mutated_records())
def test_mutated_record(case: tuple[str, bytes]) -> None:
    entry_id, raw = case
    _checked(decode_entry(entry_id, _entry(raw)), entry_id)


@settings(_BASE, max_examples=200)
@given(
    st.dictionaries(
        st.sampled_from([b"v", b"payload", b"trace", b"V", b""]) | st.binary(max_size=6),
        st.sampled_from([b"1", b"2", b"", b"{}", b"null", b'{"device_id": "A"}'])
        | st.binary(max_size=40),
        max_size=4,
    )
)
def test_arbitrary_fields(fields: dict[bytes, bytes]) -> None:
    result = _checked(decode_entry(ENTRY_ID, fields))
    if fields.get(b"v") != b"1":
        assert isinstance(result, Rejection)
        assert result.reason is Reason.UNSUPPORTED_VERSION
    elif b"payload" not in fields:
        assert isinstance(result, Rejection)
        assert result.reason is Reason.MALFORMED_JSON


def test_no_fields_at_all() -> None:
    _rejected(decode_entry(ENTRY_ID, None), Reason.UNSUPPORTED_VERSION)
    _rejected(decode_entry(ENTRY_ID, {}), Reason.UNSUPPORTED_VERSION)
    _rejected(decode_entry(ENTRY_ID, {b"v": b"1"}), Reason.MALFORMED_JSON)


_OK = (
    '{"device_id": "A1", "timestamp": "2026-05-01T10:00:00Z", '
    '"latitude": 54.5, "longitude": 25.25, "satellites": 9'
)


def _payload(extra: str = "") -> bytes:
    """A valid payload with `extra` (`, "key": value`...) appended before the closing brace."""
    return (_OK + extra + "}").encode()


def test_base_payload_is_valid() -> None:
    result = _checked(decode_entry(ENTRY_ID, _entry(_payload())))
    assert isinstance(result, Position)
    assert result.ts_ms == 1_777_629_600_000
    assert result.received_at_ms == ENTRY_MS
    assert result.fix_valid is True


def test_deep_nesting_over_the_size_limit_is_too_large() -> None:
    payload = b"[" * 100_000 + b"]" * 100_000
    _rejected(decode_entry(ENTRY_ID, _entry(payload)), Reason.TOO_LARGE)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"[" * 32_000 + b"]" * 32_000, id="arrays"),
        pytest.param(b'{"io": ' + b"[" * 32_000 + b"]" * 32_000 + b"}", id="arrays-in-io"),
        pytest.param(b'{"a": ' * 9_000 + b"1" + b"}" * 9_000, id="objects"),
        pytest.param(_payload(', "x": ' + "[" * 20_000 + "]" * 20_000), id="arrays-in-unknown-key"),
    ],
)
def test_deep_nesting_within_the_size_limit_is_malformed_json(payload: bytes) -> None:
    assert len(payload) <= MAX_PAYLOAD_BYTES
    _rejected(decode_entry(ENTRY_ID, _entry(payload)), Reason.MALFORMED_JSON)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        pytest.param(', "io": {"1": ' + "[" * 300 + "]" * 300 + "}", Reason.INVALID_FIELD, id="io"),
        pytest.param(
            ', "io": {"1": ' + "[" * 300 + '{"__nope": 1}' + "]" * 300 + "}",
            Reason.UNKNOWN_SENTINEL,
            id="io-bad-sentinel-at-the-bottom",
        ),
        pytest.param(
            ', "io": {"1": ' + '{"a": ' * 300 + '{"__bigint": "x"}' + "}" * 300 + "}",
            Reason.INVALID_SENTINEL,
            id="io-objects-bad-sentinel-at-the-bottom",
        ),
        pytest.param(
            ', "speed": [' + "[" * 300 + '{"__buffer": "!"}' + "]" * 300 + "]",
            Reason.INVALID_SENTINEL,
            id="list-at-a-known-key",
        ),
        pytest.param(
            ', "x": [' + "[" * 300 + '{"__nope": 1}' + "]" * 300 + "]", None, id="unknown-key"
        ),
    ],
)
def test_moderate_nesting_is_traversed(extra: str, expected: Reason | None) -> None:
    result = _checked(decode_entry(ENTRY_ID, _entry(_payload(extra))))
    if expected is None:
        assert isinstance(result, Position)
    else:
        assert isinstance(result, Rejection)
        assert result.reason is expected, result.detail


# --- (c) targeted examples ------------------------------------------------------------------


@pytest.mark.parametrize("value", [2**64, 2**64 + 1, -(2**63) - 1, 2**100, -(2**200), 10**300 + 7])
def test_raw_json_integer_beyond_64_bits_in_io_is_exact(value: int) -> None:
    result = _checked(decode_entry(ENTRY_ID, _entry(_payload(f', "io": {{"7": {value}}}'))))
    assert isinstance(result, Position)
    assert result.io == {"7": value}
    assert type(result.io["7"]) is int


@pytest.mark.parametrize(
    "extra",
    [
        ', "latitude": 1e400',
        ', "longitude": -1e400',
        ', "speed": 1e400',
        ', "altitude": -1e999',
        ', "angle": 1' + "0" * 400,
    ],
)
def test_number_overflowing_a_double_is_invalid_field(extra: str) -> None:
    _rejected(decode_entry(ENTRY_ID, _entry(_payload(extra))), Reason.INVALID_FIELD)


def test_overflowing_number_in_an_unknown_key_is_ignored() -> None:
    result = _checked(decode_entry(ENTRY_ID, _entry(_payload(', "future": [1e400, -1e400]'))))
    assert isinstance(result, Position)
    assert result.latitude == 54.5


@pytest.mark.parametrize(
    "extra",
    [
        ', "satellites": true',
        ', "satellites": false',
        ', "priority": true',
        ', "event_io_id": false',
        ', "latitude": true',
        ', "speed": false',
        ', "io": {"1": true}',
        ', "timestamp": true',
        ', "received_at": false',
    ],
)
def test_booleans_are_never_numbers(extra: str) -> None:
    _rejected(decode_entry(ENTRY_ID, _entry(_payload(extra))), Reason.INVALID_FIELD)


@pytest.mark.parametrize(
    "extra",
    [
        ', "satellites": 11.0',
        ', "priority": 1.5',
        ', "event_io_id": 1e2',
        ', "satellites": 1E1',
        ', "io": {"1": 1.0}',
        ', "timestamp": 1777629600000.0',
        ', "timestamp": 1.7776296e12',
    ],
)
def test_fraction_or_exponent_in_an_integer_field_is_invalid_field(extra: str) -> None:
    _rejected(decode_entry(ENTRY_ID, _entry(_payload(extra))), Reason.INVALID_FIELD)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(_payload().replace(b'"A1"', b'"A\xff1"'), id="in-a-known-key"),
        pytest.param(_OK.encode() + b', "x": "\xc3\x28"}', id="in-an-unknown-key"),
        pytest.param(b'{"x": 1e400, "device_id": "\xed\xa0\x80"}', id="after-an-overflow"),
        pytest.param(b"\xff\xfe{}", id="leading-bytes"),
    ],
)
def test_invalid_utf8_is_malformed_json(payload: bytes) -> None:
    _rejected(decode_entry(ENTRY_ID, _entry(payload)), Reason.MALFORMED_JSON)


def test_ten_megabyte_payload_is_too_large() -> None:
    payload = _payload(', "x": "' + "a" * (10 * 1024 * 1024) + '"')
    rejection = _rejected(decode_entry(ENTRY_ID, _entry(payload)), Reason.TOO_LARGE)
    assert str(len(payload)) in rejection.detail


def test_size_limit_is_inclusive() -> None:
    filler = MAX_PAYLOAD_BYTES - len(_payload(', "x": ""'))
    at_limit = _payload(', "x": "' + "a" * filler + '"')
    assert len(at_limit) == MAX_PAYLOAD_BYTES
    assert isinstance(_checked(decode_entry(ENTRY_ID, _entry(at_limit))), Position)
    over = _payload(', "x": "' + "a" * (filler + 1) + '"')
    _rejected(decode_entry(ENTRY_ID, _entry(over)), Reason.TOO_LARGE)


def test_version_is_checked_before_size() -> None:
    payload = b"x" * (MAX_PAYLOAD_BYTES + 1)
    _rejected(decode_entry(ENTRY_ID, _entry(payload, v=b"2")), Reason.UNSUPPORTED_VERSION)


def test_duplicate_keys_do_not_raise_and_the_last_wins() -> None:
    result = _checked(decode_entry(ENTRY_ID, _entry(_payload(', "latitude": -1.25'))))
    assert isinstance(result, Position)
    assert result.latitude == -1.25


@pytest.mark.parametrize(
    "extra",
    [', "codec": {"a": 1}', ', "codec": [1]', ', "codec": 8', ', "codec": {"__buffer": "OA=="}'],
)
def test_codec_of_the_wrong_type_is_invalid_field(extra: str) -> None:
    _rejected(decode_entry(ENTRY_ID, _entry(_payload(extra))), Reason.INVALID_FIELD)


def test_sentinels_decode_wherever_a_value_can_be() -> None:
    extra = (
        ', "satellites": {"__bigint": "7"}, "received_at": {"__bigint": "1777629600412"}'
        ', "io": {"1": {"__bigint": "-0"}, "2": {"__buffer": "/+8="}}'
    )
    result = _checked(decode_entry(ENTRY_ID, _entry(_payload(extra))))
    assert isinstance(result, Position)
    assert result.satellites == 7
    assert result.received_at_ms == ENTRY_MS
    assert result.io == {"1": 0, "2": b"\xff\xef"}


@pytest.mark.parametrize(
    ("sentinel", "expected"),
    [
        ('{"__bigint": "+5"}', Reason.INVALID_SENTINEL),
        ('{"__bigint": " 5"}', Reason.INVALID_SENTINEL),
        ('{"__bigint": "5e3"}', Reason.INVALID_SENTINEL),
        ('{"__bigint": 5}', Reason.INVALID_SENTINEL),
        ('{"__bigint": "٣"}', Reason.INVALID_SENTINEL),  # a non-ASCII digit
        ('{"__buffer": "AQID"}', None),
        ('{"__buffer": "AQI"}', Reason.INVALID_SENTINEL),  # missing padding
        ('{"__buffer": "AQ-_"}', Reason.INVALID_SENTINEL),  # URL-safe alphabet
        ('{"__buffer": "AQ ID"}', Reason.INVALID_SENTINEL),
        ('{"__buffer": null}', Reason.INVALID_SENTINEL),
        ('{"__Buffer": "AQID"}', Reason.UNKNOWN_SENTINEL),
        ('{"__": 1}', Reason.UNKNOWN_SENTINEL),
        ('{"__bigint": "1", "x": 2}', Reason.INVALID_FIELD),  # two keys: not a sentinel
        ('{"_bigint": "1"}', Reason.INVALID_FIELD),  # one underscore: a plain object
    ],
)
def test_sentinel_edge_cases_in_io(sentinel: str, expected: Reason | None) -> None:
    result = _checked(decode_entry(ENTRY_ID, _entry(_payload(f', "io": {{"5": {sentinel}}}'))))
    if expected is None:
        assert isinstance(result, Position)
        assert result.io == {"5": b"\x01\x02\x03"}
    else:
        assert isinstance(result, Rejection)
        assert result.reason is expected, result.detail


def test_timestamp_boundaries() -> None:
    received = ', "received_at": "2026-05-01T10:00:00.000Z"'
    at_limit = _payload(received + ', "timestamp": "2026-05-01T10:05:00.000Z"')
    result = _checked(decode_entry(ENTRY_ID, _entry(at_limit)))
    assert isinstance(result, Position)
    assert result.ts_ms == result.received_at_ms + MAX_FUTURE_MS
    past_limit = _payload(received + ', "timestamp": "2026-05-01T10:05:00.001Z"')
    _rejected(decode_entry(ENTRY_ID, _entry(past_limit)), Reason.TIMESTAMP_OUT_OF_RANGE)
    first = _checked(decode_entry(ENTRY_ID, _entry(_payload(', "timestamp": 946684800000'))))
    assert isinstance(first, Position)
    assert first.ts_ms == MIN_VALID_MS
    assert ms_to_datetime(first.ts_ms).tzinfo is UTC
    before = _payload(', "timestamp": "2000-01-01T00:00:00.000+00:01"')
    _rejected(decode_entry(ENTRY_ID, _entry(before)), Reason.TIMESTAMP_OUT_OF_RANGE)

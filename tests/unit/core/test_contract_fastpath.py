"""The typed fast path and the general path decode every input to the same result."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from processor.core.contract import decode_entry
from tests.unit.core.test_contract_properties import (
    _BASE,
    ENTRY_ID,
    _dumps,
    _entry,
    mutated_records,
    valid_records,
)


def _same(payload: bytes) -> None:
    fields = _entry(payload)
    fast = decode_entry(ENTRY_ID, fields)
    general = decode_entry(ENTRY_ID, fields, fast=False)
    assert fast == general


@_BASE
@given(valid_records(), st.booleans())
def test_valid_records_agree(
    case: tuple[str, dict[str, Any], dict[str, Any]], ascii_: bool
) -> None:
    _, doc, _ = case
    _same(_dumps(doc, ensure_ascii=ascii_))


@_BASE
@given(mutated_records())
def test_mutated_records_agree(case: tuple[str, bytes]) -> None:
    _same(case[1])


@_BASE
@given(
    valid_records(),
    st.dictionaries(
        st.text(min_size=1, max_size=8),
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers()
            | st.floats(allow_nan=False, allow_infinity=False)
            | st.text(),
            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
            max_leaves=8,
        ),
        max_size=4,
    ),
)
def test_unknown_keys_never_change_the_result(
    case: tuple[str, dict[str, Any], dict[str, Any]], extra: dict[str, Any]
) -> None:
    _, doc, _ = case
    _same(_dumps({**extra, **doc}))


def test_lone_surrogate_in_an_unknown_key_agrees() -> None:
    base = _dumps({"device_id": "A1", "timestamp": 1777629600000, "latitude": 1, "longitude": 2})
    _same(base[:-1] + b', "note": "\\ud800"}')
    _same(base[:-1] + b', "note": "\\u00e9\\ud83d\\ude00"}')
    _same(base[:-1] + b', "note": [1, 2, }')


def test_times_the_two_parsers_could_disagree_on() -> None:
    for ts in (
        "2026-05-01T10:00:00.9999995Z",  # sub-microsecond digits (RFC 3339 rounds)
        "2026-05-01t10:00:00z",  # lowercase separators (RFC 3339 allows them)
        "2026-05-01 10:00:00Z",
        "2026-05-01T10:00:00+0530",
        "20260501T100000Z",
        "2026-05-01T10:00:00,5Z",
        "2026-05-01T10:00:00",  # naive: rejected by both
        "9999-12-31T23:59:59.999-05:00",  # beyond the representable range
    ):
        _same(
            _dumps(
                {
                    "device_id": "A1",
                    "timestamp": ts,
                    "received_at": ts,
                    "latitude": 1,
                    "longitude": 2,
                }
            )
        )


ROLLOVER_MS = 1024 * 7 * 86_400_000


def _at(ts_ms: int) -> dict[bytes, bytes]:
    received = 1_777_629_600_412
    return _entry(
        _dumps(
            {
                "device_id": "WR1",
                "timestamp": ts_ms,
                "received_at": received,
                "latitude": 54.6,
                "longitude": 25.2,
            }
        )
    )


def test_week_rollover_is_rejected_by_default_and_corrected_on_request() -> None:
    from processor.core.contract import DecodeOptions
    from processor.core.position import Position, Rejection

    true_ts = 1_777_629_590_000
    fields = _at(true_ts - ROLLOVER_MS)
    rejected = decode_entry(ENTRY_ID, fields)
    assert isinstance(rejected, Rejection)
    assert rejected.reason.value == "timestamp_out_of_range"
    assert "rollover" in rejected.detail
    corrected = decode_entry(ENTRY_ID, fields, DecodeOptions(correct_week_rollover=True))
    assert isinstance(corrected, Position)
    assert corrected.ts_ms == true_ts
    assert decode_entry(ENTRY_ID, fields, fast=False) == rejected


def test_old_records_that_are_not_a_rollover_are_stored() -> None:
    from processor.core.position import Position

    ten_days = 10 * 86_400_000
    assert isinstance(decode_entry(ENTRY_ID, _at(1_777_629_600_000 - ten_days)), Position)
    # 1024 weeks and a month before: far from a whole cycle, an ordinary (old) record.
    not_a_cycle = 1_777_629_600_000 - ROLLOVER_MS - 30 * 86_400_000
    assert isinstance(decode_entry(ENTRY_ID, _at(not_a_cycle)), Position)

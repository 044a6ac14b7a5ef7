"""The shared contract test vectors, run against the decoder.

`tests/data/vectors.json` is a byte copy of the contract's
`shared/contracts/examples/vectors.json`; the last test keeps the two in step.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from processor.core.contract import decode_entry
from processor.core.position import Position, Reason, Rejection
from processor.core.timeparse import format_ms

REPO_ROOT = Path(__file__).resolve().parents[3]
VECTORS = REPO_ROOT / "tests" / "data" / "vectors.json"
SHARED_VECTORS = REPO_ROOT.parent / "shared" / "contracts" / "examples" / "vectors.json"
# The vectors' note: received_at is 2026-05-01T10:00:00.412Z unless the payload says otherwise.
ENTRY_ID = "1777629600412-0"

_DOC: dict[str, Any] = json.loads(VECTORS.read_bytes())
CASES: list[dict[str, Any]] = _DOC["cases"]


def _fields(case: dict[str, Any]) -> dict[bytes, bytes]:
    return {key.encode(): value.encode() for key, value in case["fields"].items()}


def _io_shown(value: int | bytes) -> int | dict[str, str]:
    return {"bytes_hex": value.hex()} if isinstance(value, bytes) else value


def _shown(position: Position) -> dict[str, Any]:
    """A position the way the vectors show an expected record."""
    return {
        "device_id": position.device_id,
        "ts": format_ms(position.ts_ms),
        "received_at": format_ms(position.received_at_ms),
        "codec": position.codec,
        "priority": position.priority,
        "latitude": position.latitude,
        "longitude": position.longitude,
        "altitude": position.altitude,
        "heading": position.heading,
        "satellites": position.satellites,
        "speed": position.speed,
        "event_io_id": position.event_io_id,
        "fix_valid": position.fix_valid,
        "io": {key: _io_shown(value) for key, value in position.io.items()},
    }


def _typed(value: Any) -> Any:
    """`value` with every scalar paired with its type, so 112 != 112.0 and 1 != True."""
    if isinstance(value, dict):
        return {key: _typed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_typed(item) for item in value]
    if isinstance(value, float):
        return ("float", value.hex())  # also tells 0.0 from -0.0
    return (type(value).__name__, value)


def test_vectors_are_present_and_named_uniquely() -> None:
    assert _DOC["contract"] == "stream-v1"
    names = [case["name"] for case in CASES]
    assert len(names) >= 50
    assert len(set(names)) == len(names), "duplicate case names would hide cases"
    assert any(case["expect"]["ok"] for case in CASES)
    assert any(not case["expect"]["ok"] for case in CASES)


@pytest.mark.parametrize("case", [pytest.param(case, id=case["name"]) for case in CASES])
def test_vector(case: dict[str, Any]) -> None:
    expect = case["expect"]
    result = decode_entry(ENTRY_ID, _fields(case))

    if expect["ok"]:
        assert isinstance(result, Position), f"expected a position, got {result!r}"
        assert result.stream_id == ENTRY_ID
        actual = _shown(result)
        expected: dict[str, Any] = expect["record"]
        unmapped = sorted(expected.keys() - actual.keys())
        assert not unmapped, f"expected record keys this test does not map: {unmapped}"
        for key, want in expected.items():
            assert _typed(actual[key]) == _typed(want), (
                f"{key}: got {actual[key]!r}, expected {want!r}"
            )
    else:
        assert set(expect) == {"ok", "reason"}, f"unexpected keys in expect: {sorted(expect)}"
        assert expect["reason"] in {reason.value for reason in Reason}
        assert isinstance(result, Rejection), (
            f"expected rejection {expect['reason']}, got {result!r}"
        )
        assert result.reason.value == expect["reason"], result.detail
        assert result.detail.strip(), "a rejection must say why"
        assert result.stream_id == ENTRY_ID


def test_repo_copy_matches_shared_contract() -> None:
    if not SHARED_VECTORS.is_file():
        pytest.skip(
            f"shared contract vectors not found at {SHARED_VECTORS} "
            "(the repository is checked out without its sibling shared/ directory)"
        )
    if VECTORS.read_bytes() != SHARED_VECTORS.read_bytes():
        pytest.fail(
            f"{VECTORS} differs from the contract's {SHARED_VECTORS}: the contract changed. "
            f"Refresh the copy with `cp {SHARED_VECTORS} {VECTORS}`, then run these tests "
            "and review the diff of the cases."
        )

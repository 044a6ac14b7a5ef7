"""What goes wrong between a tracker and the stream, each with its own rate.

- duplicate: a record is sent again (Teltonika re-sends an unacknowledged packet),
  arriving a few seconds later; rate = extra copies per record.
- offline: the device goes quiet for a burst, then uploads its buffer (oldest-first or
  newest-first) with received_at = upload time; rate = fraction of records delivered so.
- dropout: a record is never sent; rate = fraction of records lost.
- nofix: short bursts of records without a fix (tunnel, cold start); rate = fraction.
- malformed: a record replaced by a contract violation; rate = fraction of records.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from processor.core.position import Reason
from processor.core.timeparse import parse_time_ms

OfflineOrder = Literal["oldest-first", "newest-first"]
Payload = dict[str, Any]


@dataclass(frozen=True, slots=True)
class FaultConfig:
    duplicate_rate: float = 0.0
    offline_rate: float = 0.0
    offline_order: OfflineOrder = "oldest-first"
    offline_burst_s: tuple[float, float] = (20.0, 120.0)
    dropout_rate: float = 0.0
    nofix_rate: float = 0.0
    nofix_burst: tuple[int, int] = (1, 5)
    malformed_rate: float = 0.0

    def __post_init__(self) -> None:
        for name in ("duplicate", "offline", "dropout", "nofix", "malformed"):
            rate = getattr(self, f"{name}_rate")
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"{name} rate must be in [0, 1)")
        if self.offline_order not in ("oldest-first", "newest-first"):
            raise ValueError("offline order must be oldest-first or newest-first")


class Bursts:
    """A renewal process whose bursts cover `rate` of the records on average.

    A burst starts at a record with probability p = r / (L·(1 − r)), L the mean burst
    length, so that the long-run covered fraction pL / (1 + pL) equals r.
    """

    __slots__ = ("_draw", "_left", "_p", "_rng")

    def __init__(
        self, rate: float, lengths: tuple[int, int], rng: random.Random, fixed: bool = False
    ) -> None:
        lo, hi = max(1, lengths[0]), max(1, lengths[0], lengths[1])
        mean = (lo + hi) / 2.0
        self._p = 0.0 if rate <= 0.0 else rate / (mean * (1.0 - rate))
        self._rng = rng
        self._left = 0
        self._draw: Callable[[], int] = (lambda: lo) if fixed else (lambda: rng.randint(lo, hi))

    def step(self) -> bool:
        """Whether the next record falls in a burst."""
        if self._left > 0:
            self._left -= 1
            return True
        if self._p and self._rng.random() < self._p:
            self._left = self._draw() - 1
            return True
        return False

    def cut(self) -> None:
        """End the current burst now (end of a leg: the device reconnects)."""
        self._left = 0


# --- malformed entries: each maker returns (version field, payload bytes)

Maker = Callable[[Payload, random.Random], tuple[bytes | None, bytes]]
Corruption = tuple[bytes | None, bytes, Reason]
_encode = msgspec.json.encode


def _doc(doc: Payload, **changes: Any) -> bytes:
    copy = dict(doc)
    copy.update(changes)
    return _encode(copy)


def _set(key: str, value: Any) -> Maker:
    return lambda doc, rng: (b"1", _doc(doc, **{key: value}))


def _set_io(key: str, value: Any) -> Maker:
    def make(doc: Payload, rng: random.Random) -> tuple[bytes | None, bytes]:
        io = dict(doc.get("io") or {})
        io[key] = value
        return b"1", _doc(doc, io=io)

    return make


def _version(doc: Payload, rng: random.Random) -> tuple[bytes | None, bytes]:
    return rng.choice((b"2", b"", None)), _encode(doc)


def _truncated(doc: Payload, rng: random.Random) -> tuple[bytes | None, bytes]:
    return b"1", _encode(doc)[: rng.randint(1, 60)]


def _array(doc: Payload, rng: random.Random) -> tuple[bytes | None, bytes]:
    return b"1", _encode([doc])


def _too_large(doc: Payload, rng: random.Random) -> tuple[bytes | None, bytes]:
    return b"1", _doc(doc, note="x" * (66_000 + rng.randrange(1000)))


def _missing(doc: Payload, rng: random.Random) -> tuple[bytes | None, bytes]:
    copy = dict(doc)
    del copy[rng.choice(("device_id", "timestamp", "latitude", "longitude"))]
    return b"1", _encode(copy)


def _string_latitude(doc: Payload, rng: random.Random) -> tuple[bytes | None, bytes]:
    return b"1", _doc(doc, latitude=str(doc["latitude"]))


def _future(doc: Payload, rng: random.Random) -> tuple[bytes | None, bytes]:
    ahead = parse_time_ms(doc["received_at"]) + rng.randint(301_000, 7_200_000)
    return b"1", _doc(doc, timestamp=ahead)


R = Reason
MALFORMED: tuple[tuple[str, float, Reason, Maker], ...] = (
    ("version", 1.0, R.UNSUPPORTED_VERSION, _version),
    ("too_large", 0.2, R.TOO_LARGE, _too_large),
    ("truncated", 1.0, R.MALFORMED_JSON, _truncated),
    ("array", 0.5, R.MALFORMED_JSON, _array),
    ("missing", 1.0, R.MISSING_FIELD, _missing),
    ("string_latitude", 1.0, R.INVALID_FIELD, _string_latitude),
    ("latitude_range", 0.5, R.INVALID_FIELD, _set("latitude", 91.5)),
    ("float_satellites", 0.5, R.INVALID_FIELD, _set("satellites", 7.0)),
    ("null_device", 0.5, R.INVALID_FIELD, _set("device_id", None)),
    ("naive_time", 0.5, R.INVALID_FIELD, _set("timestamp", "2026-05-01T10:00:00")),
    ("io_key", 0.5, R.INVALID_FIELD, _set_io("0239", 1)),
    ("unknown_sentinel", 1.0, R.UNKNOWN_SENTINEL, _set_io("385", {"__int64": "12"})),
    ("bad_bigint", 0.5, R.INVALID_SENTINEL, _set_io("11", {"__bigint": "89x1"})),
    ("bad_buffer", 0.5, R.INVALID_SENTINEL, _set_io("385", {"__buffer": "not base64!"})),
    ("future", 1.0, R.TIMESTAMP_OUT_OF_RANGE, _future),
)
_WEIGHTS = [row[1] for row in MALFORMED]


def corrupt(doc: Payload, rng: random.Random) -> Corruption:
    """One contract violation of a complete payload (received_at already set)."""
    _, _, reason, make = rng.choices(MALFORMED, weights=_WEIGHTS)[0]
    version, payload = make(doc, rng)
    return version, payload, reason

"""Committed notices: which devices and time windows the core stored."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec


@dataclass(frozen=True, slots=True)
class Window:
    """Positions of `device_id` with `start_ms <= ts <= end_ms` were (re)stored."""

    device_id: str
    start_ms: int
    end_ms: int


class NoticeError(ValueError):
    """A notice that cannot be read (it is acknowledged and counted, never retried)."""


def parse_notice(fields: dict[bytes, bytes] | None) -> list[Window]:
    if not fields or fields.get(b"v") != b"1" or b"windows" not in fields:
        raise NoticeError("not a v1 committed notice")
    try:
        raw = msgspec.json.decode(fields[b"windows"], type=list[tuple[str, int, int]])
    except msgspec.MsgspecError as exc:
        raise NoticeError(str(exc)) from None
    return [Window(d, lo, hi) for d, lo, hi in raw]


def merge_windows(windows: list[Window]) -> list[Window]:
    """One window per device covering all of its windows: the work is per device anyway,
    and re-cutting a slightly wider window is cheaper than several narrow ones."""
    spans: dict[str, list[int]] = {}
    for w in windows:
        span = spans.get(w.device_id)
        if span is None:
            spans[w.device_id] = [w.start_ms, w.end_ms]
        else:
            span[0] = min(span[0], w.start_ms)
            span[1] = max(span[1], w.end_ms)
    return [Window(d, s[0], s[1]) for d, s in sorted(spans.items())]

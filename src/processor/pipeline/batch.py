"""What one batch carries from the reader to its commit."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import msgspec

from processor.core.position import Position
from processor.stream.client import DeadLetter


@dataclass(slots=True)
class Batch:
    """Entries read since the last seal; every entry ID here is acknowledged together."""

    created: float = field(default_factory=time.monotonic)
    positions: list[Position] = field(default_factory=list)
    ack_ids: list[str] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    state_duplicates: int = 0

    def __len__(self) -> int:
        return len(self.ack_ids)

    def age_s(self) -> float:
        return time.monotonic() - self.created


def committed_notice(positions: list[Position]) -> bytes | None:
    """`[[device_id, min_ts_ms, max_ts_ms], ...]`: the windows the domain stage must re-cut.

    Covers every position of the batch, new or already stored, so a replay after a crash
    between commit and acknowledgement still notifies the domain.
    """
    if not positions:
        return None
    windows: dict[str, list[int]] = {}
    for p in positions:
        window = windows.get(p.device_id)
        if window is None:
            windows[p.device_id] = [p.ts_ms, p.ts_ms]
        elif p.ts_ms < window[0]:
            window[0] = p.ts_ms
        elif p.ts_ms > window[1]:
            window[1] = p.ts_ms
    return msgspec.json.encode([[d, w[0], w[1]] for d, w in windows.items()])

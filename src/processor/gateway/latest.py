"""The latest fix of every device the gateway has seen, bounded.

Fed by the input stream (a plain XREAD, no consumer group: the gateway never slows or
acknowledges for the core). A fix older than the one held (an upload of buffered records)
does not replace it: cars are drawn where they are now.

Invariant: at most `max_devices` devices are held (the least recently updated one is
evicted first), and a device's fix only moves forward in time.
"""

from __future__ import annotations

from collections import OrderedDict

from processor.core.position import Position


class LatestFixes:
    def __init__(self, max_devices: int) -> None:
        self.max_devices = max_devices
        self._fixes: OrderedDict[str, Position] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._fixes)

    def get(self, device: str) -> Position | None:
        return self._fixes.get(device)

    def all(self) -> list[Position]:
        return list(self._fixes.values())

    def offer(self, fix: Position) -> bool:
        """Hold `fix` if it is the device's newest; True when it changed the state."""
        if not fix.fix_valid:
            return False
        held = self._fixes.get(fix.device_id)
        if held is not None and held.ts_ms >= fix.ts_ms:
            return False
        self._fixes[fix.device_id] = fix
        self._fixes.move_to_end(fix.device_id)
        while len(self._fixes) > self.max_devices:
            self._fixes.popitem(last=False)
            self.evicted += 1
        return True

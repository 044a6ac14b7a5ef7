"""Positions waiting for one client: the newest fix per car, never a queue.

Every interval the hub merges the cars that moved into each client's pending map; the
client's writer takes the whole map when it is ready to write. A client that reads
slowly therefore gets the newest state at its own pace, and what waits for it is at
most one item per car it follows, however long it stalls.

Invariant: `len(pending) <= number of distinct keys merged`, and `take` returns, per
key, the item merged last.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

Item = dict[str, Any]


class PendingPositions:
    def __init__(self) -> None:
        self._items: dict[object, Item] = {}
        self.replaced = 0  # items overwritten before they were sent (coalesced)

    def __len__(self) -> int:
        return len(self._items)

    def merge(self, items: Iterable[tuple[object, Item]]) -> None:
        for key, item in items:
            if key in self._items:
                self.replaced += 1
            self._items[key] = item

    def take(self) -> list[Item]:
        items, self._items = list(self._items.values()), {}
        return items

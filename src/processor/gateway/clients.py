"""One connected client: what waits to be written to it, and nothing more.

Three kinds of state wait: changes (a bounded queue, in stream order), the latest board
of its stage (replaced, never queued) and positions (`PendingPositions`: one per car).
When the queue is full the client is not slowed and nobody else is: the queue is
emptied and the client is sent a fresh snapshot instead, which holds everything the
dropped changes held.

Invariant: a client holds at most `queue_limit` changes, one board and one position per
car it follows; its messages go out with strictly increasing sequence numbers (a change
at or below the last one written is skipped: it is in what the client has).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from processor.gateway.coalesce import PendingPositions
from processor.gateway.scope import Scope, Subscription
from processor.gateway.sequence import StreamId, parse_id


@dataclass(frozen=True)
class Outgoing:
    """An encoded message: its type, sequence number (changes only), JSON body, and the
    time (epoch seconds) of what it reports, for the latency metric."""

    type: str
    seq: str | None
    body: bytes
    origin_s: float | None = None


class Client:
    def __init__(self, scope: Scope, sub: Subscription, transport: str, queue_limit: int) -> None:
        self.scope = scope
        self.sub = sub
        self.transport = transport
        self.queue_limit = queue_limit
        self.queue: deque[Outgoing] = deque()
        self.backfill: list[Outgoing] = []  # a resume's missed changes, before the queue
        self.board: Outgoing | None = None
        self.pending = PendingPositions()
        self.resync = True  # a snapshot first, unless the client resumes
        self.floor: StreamId = (0, 0)
        self.overflows = 0
        self.wake = asyncio.Event()
        self.wake.set()

    def group(self) -> tuple[object, ...]:
        return (self.scope, *self.sub.key())

    def offer(self, message: Outgoing) -> bool:
        """Queue a change; False when the queue was full (the client will resync)."""
        if len(self.queue) >= self.queue_limit:
            self.queue.clear()
            self.resync = True
            self.overflows += 1
            self.wake.set()
            return False
        self.queue.append(message)
        self.wake.set()
        return True

    def set_board(self, message: Outgoing) -> None:
        self.board = message
        self.wake.set()

    def advance(self, seq: str | None) -> bool:
        """Whether a message with `seq` is new to this client (and note it as written)."""
        if seq is None:
            return True
        parsed = parse_id(seq)
        if parsed is None or parsed <= self.floor:
            return False
        self.floor = parsed
        return True

    def take_changes(self) -> list[Outgoing]:
        out = self.backfill + list(self.queue)
        self.backfill = []
        self.queue.clear()
        return out

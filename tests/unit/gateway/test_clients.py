"""A client's queue is bounded; overflow means a snapshot, not a slower gateway."""

from __future__ import annotations

from processor.gateway.clients import Client, Outgoing
from processor.gateway.scope import Scope, Subscription


def change(seq: str) -> Outgoing:
    return Outgoing("change", seq, b"{}")


def test_overflow_clears_the_queue_and_asks_for_a_snapshot() -> None:
    c = Client(Scope.PUBLIC, Subscription(event=1), "websocket", queue_limit=2)
    c.resync = False
    assert c.offer(change("1-0"))
    assert c.offer(change("2-0"))
    assert not c.offer(change("3-0"))
    assert c.resync
    assert len(c.queue) == 0
    assert c.overflows == 1


def test_sequence_numbers_only_go_forward() -> None:
    c = Client(Scope.PUBLIC, Subscription(event=1), "websocket", queue_limit=10)
    assert c.advance("5-0")
    assert not c.advance("5-0")
    assert not c.advance("4-9")
    assert c.advance("5-1")
    assert c.advance(None)  # positions and boards carry no sequence number


def test_board_is_replaced_not_queued() -> None:
    c = Client(Scope.PUBLIC, Subscription(event=1), "sse", queue_limit=10)
    c.set_board(Outgoing("board", None, b"1"))
    c.set_board(Outgoing("board", None, b"2"))
    assert c.board is not None
    assert c.board.body == b"2"

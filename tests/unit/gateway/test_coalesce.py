"""A slow client holds one position per car, the newest."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from processor.gateway.coalesce import PendingPositions


def test_newest_item_per_key_wins_and_take_empties() -> None:
    p = PendingPositions()
    p.merge([("a", {"ts": 1}), ("b", {"ts": 1})])
    p.merge([("a", {"ts": 2})])
    assert len(p) == 2
    assert p.replaced == 1
    assert sorted(i["ts"] for i in p.take()) == [1, 2]
    assert p.take() == []


@given(st.lists(st.lists(st.tuples(st.integers(0, 20), st.integers()), max_size=30), max_size=50))
def test_bounded_by_keys_whatever_the_ticks(ticks: list[list[tuple[int, int]]]) -> None:
    p = PendingPositions()
    last: dict[int, int] = {}
    for tick in ticks:
        p.merge((k, {"k": k, "v": v}) for k, v in tick)
        last.update(tick)
        assert len(p) <= 21
    assert {i["k"]: i["v"] for i in p.take()} == last

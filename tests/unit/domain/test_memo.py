"""The bounded memo behind the projection and the segment hits."""

from __future__ import annotations

import pytest

from processor.domain.memo import Memo


def test_remembers_until_full_then_forgets_everything() -> None:
    memo: Memo[str, int] = Memo(2)
    memo.put("a", 1)
    memo.put("b", 2)
    assert (memo.get("a"), memo.get("b"), len(memo)) == (1, 2, 2)
    memo.put("c", 3)  # full: starts again with only the newest
    assert (memo.get("a"), memo.get("b"), memo.get("c"), len(memo)) == (None, None, 3, 1)


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        Memo[str, int](0)

"""Committed notices: one window per device covering every position of the batch."""

from __future__ import annotations

import msgspec

from processor.pipeline.batch import Batch, committed_notice
from tests.unit.state.test_devices import pos


def test_notice_covers_min_and_max_time_per_device() -> None:
    positions = [pos("A", 3000), pos("B", 10), pos("A", 1000), pos("A", 2000), pos("A", 5000)]
    notice = committed_notice(positions)
    assert notice is not None
    assert sorted(msgspec.json.decode(notice)) == [["A", 1000, 5000], ["B", 10, 10]]


def test_no_positions_no_notice() -> None:
    assert committed_notice([]) is None


def test_batch_length_counts_every_entry_to_acknowledge() -> None:
    batch = Batch()
    batch.ack_ids.extend(["1-0", "2-0"])
    assert len(batch) == 2
    assert batch.age_s() >= 0

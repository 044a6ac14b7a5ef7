"""A deleted output and a created one that are the same thing re-cut keep their published
row (store.recuts): paired by identity, in time order, never across identities."""

from __future__ import annotations

import msgspec

from processor.domain_runner.store import Diff, Output, recuts
from processor.domain_runner.tables import ALERTS, PENALTIES, TIMING_RECORDS


class Row(msgspec.Struct, frozen=True):
    """The fields identities are made of (a stand-in for the real row types)."""

    stage: int = 1
    entry: int = 1
    geofence: int = 0
    kind: str = ""


def timing(key: str, at_ms: int, geofence: int = 3, entry: int = 1) -> Output[Row]:
    row = Row(stage=1, entry=entry, geofence=geofence, kind="split_line")
    return Output("timing_records", key, 1, 1, entry, at_ms, row)


def test_a_retimed_crossing_is_the_same_row() -> None:
    old, new = timing("a", 1000), timing("b", 1160)
    assert recuts(TIMING_RECORDS, Diff(created=[new], deleted=[old])) == [(old, new)]


def test_crossings_pair_in_time_order_within_their_gate() -> None:
    old = [timing("o2", 5000), timing("o1", 1000), timing("x", 2000, geofence=4)]
    new = [timing("n1", 1100), timing("n2", 5100), timing("y", 2100, geofence=5)]
    pairs = recuts(TIMING_RECORDS, Diff(created=new, deleted=old))
    assert [(o.key, n.key) for o, n in pairs] == [("o1", "n1"), ("o2", "n2")]


def test_another_cars_crossing_is_never_its_successor() -> None:
    d = Diff(created=[timing("b", 1000, entry=2)], deleted=[timing("a", 1000, entry=1)])
    assert recuts(TIMING_RECORDS, d) == []


def test_an_alert_whose_start_moved_is_the_same_alert() -> None:
    old = Output("alerts", "1:stopped:1000", 1, 1, 1, 1000, Row(entry=1, kind="stopped"))
    new = Output("alerts", "1:stopped:2000", 1, 1, 1, 2000, Row(entry=1, kind="stopped"))
    other = Output("alerts", "1:panic:2000", 1, 1, 1, 2000, Row(entry=1, kind="panic"))
    assert recuts(ALERTS, Diff(created=[other, new], deleted=[old])) == [(old, new)]


def test_penalties_keep_their_keys() -> None:
    # A missed waypoint is not another waypoint's penalty: penalties declare no identity.
    old = Output("penalties", "1:1:missed_waypoint:2", 1, 1, 1, 0, Row())
    new = Output("penalties", "1:1:missed_waypoint:4", 1, 1, 1, 0, Row())
    assert recuts(PENALTIES, Diff(created=[new], deleted=[old])) == []

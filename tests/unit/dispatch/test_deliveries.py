"""One delivery per row, its newest state, in version order (dispatch/deliveries.py)."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from processor.dispatch.deliveries import OutboxEvent, plan

AT = datetime(2026, 5, 1, 6, 0, tzinfo=UTC)


def event(id: int, key: str, change: str, value: int = 0) -> OutboxEvent:
    payload = {"collection": "stage_results", "key": key, "change": change, "id": 7}
    if change != "deleted":
        payload["data"] = {"rank": value}
    return OutboxEvent(
        id, "stage_results", key, change, f"stage_result.{change}", json.dumps(payload), AT
    )


def test_a_row_is_delivered_once_with_its_newest_state() -> None:
    p = plan(
        [event(3, "1:2", "updated", 2), event(1, "1:2", "updated", 5), event(2, "1:3", "created")]
    )
    assert [(d.event.row_key, d.change, d.version) for d in p.deliveries] == [
        ("1:3", "created", 2),
        ("1:2", "updated", 3),
    ]
    assert p.ids == [1, 2, 3]
    assert p.coalesced == 1
    item = p.deliveries[1].item()
    assert item["payload"]["data"] == {"rank": 2}
    assert item["payload"]["version"] == 3
    assert item["event_key"] == "stage_results:1:2:3"
    assert item["kind"] == "stage_result.updated"


def test_a_row_created_in_the_run_is_announced_as_created() -> None:
    (d,) = plan([event(1, "k", "created", 1), event(2, "k", "updated", 2)]).deliveries
    assert (d.change, d.item()["kind"], d.item()["payload"]["change"]) == (
        "created",
        "stage_result.created",
        "created",
    )


def test_a_row_deleted_at_the_end_of_the_run_is_announced_deleted() -> None:
    # Even when created in the run: that creation may have reached Directus before a crash.
    (d,) = plan([event(1, "k", "created"), event(2, "k", "deleted")]).deliveries
    assert d.change == "deleted"
    assert "data" not in d.item()["payload"]


def test_a_row_that_returns_to_an_earlier_state_is_a_new_version() -> None:
    # A -> B -> A: three versions; the last delivered, under a key of its own.
    runs = [plan([event(i, "k", "updated", v)]) for i, v in ((1, 1), (2, 2), (3, 1))]
    keys = [r.deliveries[0].event_key for r in runs]
    assert len(set(keys)) == 3
    assert runs[2].deliveries[0].item()["payload"]["data"] == {"rank": 1}


def test_a_legacy_event_keeps_its_key() -> None:
    e = event(1, "k", "updated")
    legacy = OutboxEvent(**{**e.__dict__, "event_key": "stage_results:k:updated:abcd"})
    assert plan([legacy]).deliveries[0].event_key == "stage_results:k:updated:abcd"


@given(
    st.lists(
        st.tuples(st.sampled_from("abc"), st.sampled_from(["created", "updated", "deleted"])),
        max_size=30,
    ),
    st.randoms(),
)
def test_applying_the_deliveries_ends_on_every_rows_last_state(
    changes: list[tuple[str, str]], rnd: random.Random
) -> None:
    events = [event(i, key, change, i) for i, (key, change) in enumerate(changes, start=1)]
    shuffled = list(events)
    rnd.shuffle(shuffled)
    p = plan(shuffled)
    assert sorted(p.ids) == [e.id for e in events]
    versions = [d.version for d in p.deliveries]
    assert versions == sorted(versions)
    last = {e.row_key: e for e in events}
    assert {d.event.row_key: d.event for d in p.deliveries} == last

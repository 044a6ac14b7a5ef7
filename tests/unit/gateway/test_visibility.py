"""The public never sees an IMEI, an alert, a note or a private event."""

from __future__ import annotations

from typing import Any

import pytest

from processor.core.position import Position
from processor.gateway.roster import EntryInfo, EventInfo, Roster, StageInfo
from processor.gateway.scope import Scope, Subscription, SubscriptionError
from processor.gateway.visibility import Change, change_view, position_view, resolve

ROSTER = Roster(
    events={1: EventInfo(1, "Public rally", True, "UTC"), 2: EventInfo(2, "Test", False, "UTC")},
    stages={
        10: StageInfo(10, 1, "SS1", 1),
        11: StageInfo(11, 1, "SS2", 2),
        20: StageInfo(20, 2, "T", 1),
    },
    entries={
        100: EntryInfo(100, 1, 7, "A. Driver / B. Navigator", "R2", "IMEI100"),
        101: EntryInfo(101, 1, 8, "C / D", None, "IMEI101"),
        200: EntryInfo(200, 2, 1, "Tester", None, "IMEI200"),
    },
)


def change(collection: str, **over: Any) -> Change:
    base: dict[str, Any] = {
        "seq": "5-0",
        "collection": collection,
        "change": "updated",
        "id": 1,
        "version": 9,
        "event": 1,
        "stage": 10,
        "entry": 100,
        "data": {"id": 1, "status": "running", "note": "private", "details": {"x": 1}},
        "created_at": "2026-05-01T06:00:00+00:00",
    }
    base.update(over)
    return Change(**base)


def fix(device: str) -> Position:
    return Position(device, 1000, 1200, 45.0, 7.0, True, "1-0", satellites=9, speed=80.0)


def stage_sub(scope: Scope, stage: int = 10, **kw: Any) -> Subscription:
    return resolve(Subscription(stage=stage, **kw), scope, ROSTER)


def test_resolve_fills_the_event_and_refuses_private_events_to_the_public() -> None:
    assert stage_sub(Scope.PUBLIC).event == 1
    with pytest.raises(SubscriptionError, match="no event 2"):
        resolve(Subscription(event=2), Scope.PUBLIC, ROSTER)
    assert resolve(Subscription(event=2), Scope.RACE_CONTROL, ROSTER).event == 2
    with pytest.raises(SubscriptionError, match="no stage"):
        resolve(Subscription(stage=99), Scope.RACE_CONTROL, ROSTER)
    with pytest.raises(SubscriptionError, match="not in event"):
        resolve(Subscription(event=2, stage=10), Scope.RACE_CONTROL, ROSTER)


def test_public_gets_results_without_notes_and_never_alerts() -> None:
    sub = stage_sub(Scope.PUBLIC)
    view = change_view(change("stage_results"), sub, Scope.PUBLIC, ROSTER)
    assert view is not None
    assert view["data"] == {"id": 1, "status": "running"}
    assert change_view(change("alerts"), sub, Scope.PUBLIC, ROSTER) is None


def test_race_control_gets_alerts_with_notes() -> None:
    sub = stage_sub(Scope.RACE_CONTROL)
    view = change_view(change("alerts"), sub, Scope.RACE_CONTROL, ROSTER)
    assert view is not None
    assert view["data"]["note"] == "private"


def test_changes_of_other_stages_and_events_are_not_sent() -> None:
    sub = stage_sub(Scope.RACE_CONTROL)
    assert change_view(change("stage_results", stage=11), sub, Scope.RACE_CONTROL, ROSTER) is None
    assert change_view(change("alerts", event=2), sub, Scope.RACE_CONTROL, ROSTER) is None
    event_wide = change("alerts", stage=None)
    assert change_view(event_wide, sub, Scope.RACE_CONTROL, ROSTER) is not None


def test_entry_and_device_filters() -> None:
    sub = stage_sub(Scope.RACE_CONTROL, devices=frozenset({"IMEI101"}))
    assert sub.entries == {101}
    assert change_view(change("stage_results"), sub, Scope.RACE_CONTROL, ROSTER) is None
    assert change_view(change("stage_results", entry=101), sub, Scope.RACE_CONTROL, ROSTER)
    assert position_view(fix("IMEI100"), sub, Scope.RACE_CONTROL, ROSTER) is None
    assert position_view(fix("IMEI101"), sub, Scope.RACE_CONTROL, ROSTER) is not None


def test_public_positions_are_keyed_by_entry_without_device_data() -> None:
    view = position_view(fix("IMEI100"), stage_sub(Scope.PUBLIC), Scope.PUBLIC, ROSTER)
    assert view is not None
    key, item = view
    assert key == 100
    assert "IMEI100" not in repr(item)
    assert set(item) == {"entry", "number", "lat", "lon", "speed", "heading", "ts"}


def test_race_control_positions_carry_device_health() -> None:
    view = position_view(fix("IMEI100"), stage_sub(Scope.RACE_CONTROL), Scope.RACE_CONTROL, ROSTER)
    assert view is not None
    key, item = view
    assert key == "IMEI100"
    assert item["sats"] == 9
    assert item["received"] == 1200


def test_unknown_devices_and_other_events_are_not_shown() -> None:
    sub = stage_sub(Scope.RACE_CONTROL)
    assert position_view(fix("UNKNOWN"), sub, Scope.RACE_CONTROL, ROSTER) is None
    assert position_view(fix("IMEI200"), sub, Scope.RACE_CONTROL, ROSTER) is None
    assert position_view(fix("UNKNOWN"), stage_sub(Scope.PUBLIC), Scope.PUBLIC, ROSTER) is None

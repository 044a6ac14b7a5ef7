"""Per-event rules: defaults, partial documents, and invalid ones reported, not applied."""

from __future__ import annotations

import msgspec
import pytest

from processor.domain.config import load_rows
from processor.domain.rules import DEFAULT_RULES, RulesError, parse_rules

EVENT = {
    "id": 1,
    "name": "E",
    "starts_at": "2026-05-01T05:00:00Z",
    "ends_at": "2026-05-01T14:00:00Z",
}


def test_no_rules_are_the_defaults() -> None:
    assert parse_rules(None) == DEFAULT_RULES
    assert parse_rules("{}") == DEFAULT_RULES
    assert DEFAULT_RULES.alerts.stopped.after_s == 60.0
    assert DEFAULT_RULES.speed.style == "table"


def test_a_partial_document_keeps_the_other_defaults() -> None:
    rules = parse_rules({"alerts": {"stopped": {"after_s": 90}}, "speed": {"style": "formula"}})
    assert rules.alerts.stopped.after_s == 90.0
    assert rules.alerts.stopped.escalate_after_s == DEFAULT_RULES.alerts.stopped.escalate_after_s
    assert rules.alerts.signal_lost == DEFAULT_RULES.alerts.signal_lost
    assert rules.speed.style == "formula"
    assert rules.speed.bands == DEFAULT_RULES.speed.bands


def test_waypoint_penalties_by_type_with_a_default() -> None:
    rules = parse_rules(b'{"waypoints": {"default_s": 600, "by_type": {"WPM": 1800}}}')
    assert rules.waypoints.penalty_s("WPM") == 1800.0
    assert rules.waypoints.penalty_s("WPV") == 600.0
    assert rules.waypoints.penalty_s(None) == 600.0


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        ({"alerts": {"stoped": {}}}, "stoped"),
        ({"speed": {"style": "fines"}}, "style"),
        (
            {
                "speed": {
                    "bands": [{"over_kmh": 10, "penalty_s": 1}, {"over_kmh": 5, "penalty_s": 2}]
                }
            },
            "bands",
        ),
        ({"speed": {"factor": 0}}, "factor"),
        ({"alerts": {"stopped": {"after_s": 300, "escalate_after_s": 60}}}, "escalate"),
        ("not json", "rules"),
    ],
)
def test_invalid_rules_say_why(doc: object, says: str) -> None:
    with pytest.raises(RulesError, match=says):
        parse_rules(doc)


def test_an_event_with_invalid_rules_keeps_timing_with_the_defaults() -> None:
    config, errors = load_rows(events=[{**EVENT, "rules": {"speed": {"style": "fines"}}}])
    assert [e.id for e in config.events] == [1]
    assert config.events[0].rules == DEFAULT_RULES
    assert [(e.collection, e.row_id) for e in errors] == [("events", "1")]
    assert "default rules" in errors[0].message


def test_an_event_keeps_its_rules() -> None:
    rules = {"speed": {"style": "formula", "factor": 2.5}}
    config, errors = load_rows(events=[{**EVENT, "rules": msgspec.json.encode(rules).decode()}])
    assert errors == []
    assert config.events[0].rules.speed.factor == 2.5

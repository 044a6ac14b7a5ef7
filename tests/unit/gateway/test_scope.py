"""Tokens grant scopes; subscriptions are parsed strictly."""

from __future__ import annotations

import pytest

from processor.gateway.scope import (
    Scope,
    SubscriptionError,
    authorise,
    bearer,
    parse_subscription,
)


def test_race_control_token_grants_race_control() -> None:
    assert authorise("rc", race_control="rc", public="pub") is Scope.RACE_CONTROL
    assert authorise("pub", race_control="rc", public="pub") is Scope.PUBLIC


def test_a_wrong_token_is_refused_never_downgraded() -> None:
    assert authorise("nope", race_control="rc", public="") is None
    assert authorise("nope", race_control="rc", public="pub") is None


def test_no_token_is_public_only_when_the_public_scope_is_open() -> None:
    assert authorise(None, race_control="rc", public="") is Scope.PUBLIC
    assert authorise(None, race_control="rc", public="pub") is None


def test_no_race_control_token_configured_means_nobody_gets_it() -> None:
    assert authorise("", race_control="", public="") is Scope.PUBLIC
    assert authorise("anything", race_control="", public="") is None


def test_bearer_header_wins_over_the_query() -> None:
    assert bearer("Bearer abc", "q") == "abc"
    assert bearer(None, "q") == "q"
    assert bearer("Basic xyz", None) is None


def test_subscription_parses_filters() -> None:
    sub = parse_subscription({"stage": "3", "entry": "1, 2", "device": "A,B"}, Scope.RACE_CONTROL)
    assert (sub.event, sub.stage) == (None, 3)
    assert sub.entries == {1, 2}
    assert sub.devices == {"A", "B"}


@pytest.mark.parametrize(
    "query",
    [{}, {"stage": "x"}, {"event": "0"}, {"event": "-1"}, {"event": "1", "entry": "a"}],
)
def test_bad_subscriptions_are_refused(query: dict[str, str]) -> None:
    with pytest.raises(SubscriptionError):
        parse_subscription(query, Scope.RACE_CONTROL)


def test_device_filters_are_race_control_only() -> None:
    with pytest.raises(SubscriptionError, match="race-control"):
        parse_subscription({"event": "1", "device": "A"}, Scope.PUBLIC)

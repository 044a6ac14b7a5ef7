"""The one instrumented retry: retries what the classifier names, counts each, gives up."""

from __future__ import annotations

import asyncpg
import pytest
from prometheus_client import CollectorRegistry, Counter

from processor.core.retry import RetryPolicy, retrying
from processor.domain_runner.runner import transient

ATTEMPTS = 4
FAST = RetryPolicy(initial_s=0.001, max_s=0.002, attempts=ATTEMPTS)


def _counter() -> tuple[CollectorRegistry, Counter]:
    registry = CollectorRegistry()
    return registry, Counter("retries", "retries", ["operation", "error_class"], registry=registry)


def _deadlock() -> asyncpg.DeadlockDetectedError:
    return asyncpg.DeadlockDetectedError("deadlock detected")


async def test_a_transient_error_is_retried_and_counted() -> None:
    registry, counter = _counter()
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise _deadlock()
        return "done"

    assert (
        await retrying(
            "op",
            flaky,
            on=transient,
            policy=FAST,
            count=lambda error: counter.labels("op", error).inc(),
        )
        == "done"
    )
    assert calls == 3
    labels = {"operation": "op", "error_class": "deadlock"}
    assert registry.get_sample_value("retries_total", labels) == 2


async def test_an_error_not_classified_is_raised_at_once() -> None:
    _, counter = _counter()
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise asyncpg.UndefinedTableError("relation does not exist")

    with pytest.raises(asyncpg.UndefinedTableError):
        await retrying(
            "op",
            broken,
            on=transient,
            policy=FAST,
            count=lambda error: counter.labels("op", error).inc(),
        )
    assert calls == 1


async def test_the_policy_gives_up_with_the_last_error() -> None:
    registry, counter = _counter()

    async def always() -> None:
        raise _deadlock()

    with pytest.raises(asyncpg.DeadlockDetectedError):
        await retrying(
            "op",
            always,
            on=transient,
            policy=FAST,
            count=lambda error: counter.labels("op", error).inc(),
        )
    assert (
        registry.get_sample_value("retries_total", {"operation": "op", "error_class": "deadlock"})
        == ATTEMPTS - 1
    )


def test_transient_names_the_classes_worth_another_try() -> None:
    assert transient(_deadlock()) == "deadlock"
    assert transient(asyncpg.SerializationError("could not serialize")) == "serialization"
    assert transient(ConnectionResetError()) == "connection"
    assert transient(TimeoutError()) == "timeout"
    assert transient(asyncpg.QueryCanceledError("canceling statement")) == "timeout"
    assert transient(asyncpg.CannotConnectNowError("starting up")) == "unavailable"
    assert transient(asyncpg.UndefinedTableError("no table")) is None
    assert transient(ValueError("a bug")) is None

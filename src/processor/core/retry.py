"""One instrumented retry for the processor: stamina's backoff, our metric and log line.

Every retried operation says what it is (`operation`), which errors are worth another
try (`on`: a function naming the error's class, or None for "not retryable"), and how
long to keep at it. Each retry is counted in the caller's counter with the operation
and the error class, and logged once, so a stuck retry loop is visible in both.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import stamina
import structlog

log = structlog.get_logger(__name__)
T = TypeVar("T")
# Our own counter and log line per retry (below) instead of stamina's global ones: its
# Prometheus counter would land in the default registry, which the processor does not serve.
stamina.instrumentation.set_on_retry_hooks([])
Classify = Callable[[BaseException], str | None]


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying: `attempts` in all (None: no limit) within `timeout_s`
    (None: no limit), waiting from `initial_s` doubling up to `max_s`, with jitter."""

    initial_s: float = 0.05
    max_s: float = 5.0
    attempts: int | None = 10
    timeout_s: float | None = None


def forever(initial_s: float, max_s: float) -> RetryPolicy:
    """Until it works (or the task is cancelled: shutdown): for work that must not be lost."""
    return RetryPolicy(initial_s=initial_s, max_s=max_s, attempts=None, timeout_s=None)


async def retrying(
    operation: str,
    call: Callable[[], Awaitable[T]],
    *,
    on: Classify,
    policy: RetryPolicy,
    count: Callable[[str], object],
    event: str = "retrying",
    **context: Any,
) -> T:
    """`await call()`, again while it raises an error `on` classifies, per `policy`.

    `count(error_class)` is called once per retry (a metric's `inc`), and the retry is
    logged as `event` with the operation, error and `context`. The last error is
    re-raised when the policy gives up; an error `on` does not classify, at once.
    """
    last: list[tuple[str, Exception]] = []  # the error that caused the next attempt

    def retryable(exc: Exception) -> bool:
        error_class = on(exc)
        if error_class is None:
            return False
        last.append((error_class, exc))
        return True

    async for attempt in stamina.retry_context(
        on=retryable,
        attempts=policy.attempts,
        timeout=policy.timeout_s,
        wait_initial=policy.initial_s,
        wait_max=policy.max_s,
        wait_jitter=policy.initial_s,
    ):
        if attempt.num > 1:  # counted when the retry happens, not when giving up
            error_class, exc = last[-1]
            count(error_class)
            log.warning(
                event,
                operation=operation,
                error_class=error_class,
                error=describe(exc),
                attempt=attempt.num,
                **context,
            )
        with attempt:
            return await call()
    raise AssertionError("unreachable: stamina re-raises once it gives up")  # pragma: no cover


def describe(exc: BaseException) -> str:
    """One line for a log: the SQLSTATE when there is one, the first line of the message."""
    state = getattr(exc, "sqlstate", None)
    text = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
    return f"{state}: {text}" if state else f"{type(exc).__name__}: {text}"

"""One instrumented retry for the processor: stamina's backoff, our metric and log line.

Every retried operation says what it is (`operation`), which errors are worth another
try (`on`: a function naming the error's class, or None for "not retryable"), and how
long to keep at it. Each retry is counted in the caller's counter with the operation
and the error class, and logged once, so a stuck retry loop is visible in both.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import stamina
import structlog
from prometheus_client import Counter

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


async def retrying(
    operation: str,
    call: Callable[[], Awaitable[T]],
    *,
    on: Classify,
    policy: RetryPolicy,
    counter: Counter,
) -> T:
    """`await call()`, again while it raises an error `on` classifies, per `policy`.

    `counter` is labelled (operation, error class); the last error is re-raised when the
    policy gives up, and an error `on` does not classify is raised at once.
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
            counter.labels(operation, error_class).inc()
            log.warning(
                "retrying",
                operation=operation,
                error_class=error_class,
                error=f"{type(exc).__name__}: {exc}"[:300],
                attempt=attempt.num,
            )
        with attempt:
            return await call()
    raise AssertionError("unreachable: stamina re-raises once it gives up")  # pragma: no cover

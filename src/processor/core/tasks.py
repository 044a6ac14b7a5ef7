"""Ending asyncio tasks for sure."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel the tasks and wait until they have ended, cancelling again if need be.

    One cancel() is not always enough on Python 3.11: `asyncio.wait_for` (which redis-py
    uses to send every command when a socket timeout is set) swallows a cancellation that
    arrives as the wrapped send completes, and the task carries on (CPython gh-86296,
    fixed in 3.12). A loop such as the claimer then runs forever and so would a plain
    `gather` after `cancel()`.
    """
    pending = set(tasks)
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.5)

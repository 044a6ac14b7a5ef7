"""Lost cancellations: why one cancel() does not always stop a task, and the cure.

Found by the conservation test (seed 9): a processor SIGTERMed during a Redis stall never
exited, its claimer still looping, "cancelling", while `run()` waited on it forever.
redis-py sends every command through `asyncio.wait_for(send, socket_timeout)`, and on
Python 3.11 `wait_for` swallows a cancellation that arrives as the send completes.
"""

from __future__ import annotations

import asyncio
import sys

import pytest

from processor.core.tasks import cancel_and_wait

pytestmark = pytest.mark.faults


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="fixed in CPython 3.12 (gh-86296)")
async def test_wait_for_swallows_a_cancellation_that_meets_completion() -> None:
    loop = asyncio.get_running_loop()
    sent: asyncio.Future[None] = loop.create_future()

    async def command() -> str:
        await asyncio.wait_for(sent, 10)  # as redis-py's send_packed_command
        return "carried on"

    task = asyncio.create_task(command())
    await asyncio.sleep(0)
    sent.set_result(None)
    task.cancel()
    assert await task == "carried on"  # the cancellation is gone
    assert task.cancelling() == 1


async def test_cancel_and_wait_stops_a_task_that_lost_a_cancellation() -> None:
    rounds = 0

    async def loop_like_the_claimer() -> None:
        nonlocal rounds
        while True:
            rounds += 1
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if rounds < 3:
                    continue  # as if lost inside a library call
                raise

    task = asyncio.create_task(loop_like_the_claimer())
    await asyncio.sleep(0.02)
    await asyncio.wait_for(cancel_and_wait([task]), 5)
    assert task.cancelled()

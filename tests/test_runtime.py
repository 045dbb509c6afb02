"""Runtime shutdown: background tasks end even when one swallows its cancellation."""

from __future__ import annotations

import asyncio

from mailbeacon.runtime import _cancelled


async def test_a_task_that_swallows_a_cancellation_is_cancelled_again() -> None:
    # Python 3.11's asyncio.wait_for loses a cancellation that races its wake-up; the
    # task then loops on. Shutdown must not wait for it forever.
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed > 1:
                    raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(_cancelled(task), 10)
    assert task.cancelled() and swallowed == 2


async def test_a_task_that_had_failed_does_not_stop_shutdown() -> None:
    async def broken() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(broken())
    await asyncio.sleep(0)
    await _cancelled(task)
    assert isinstance(task.exception(), RuntimeError)

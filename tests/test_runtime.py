"""Shutdown: background tasks end when cancelled, even as they are woken, and even
when one swallows its cancellation."""

from __future__ import annotations

import asyncio
from typing import Any

from mailbeacon.model.tokens import TokenCodec
from mailbeacon.runtime import _cancelled
from mailbeacon.send.outbox import LocalOutbox
from mailbeacon.send.worker import DeliveryWorker
from mailbeacon.storage.db import Database
from mailbeacon.webhooks.sender import WebhookSender


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


async def _cancelled_while_woken(run: Any, wake: Any) -> None:
    """Start a background loop, let it go idle, then wake and cancel it in the same turn
    (the race Python 3.11's wait_for loses): it must end, cancelled."""
    task = asyncio.create_task(run())
    await asyncio.sleep(0.3)  # a round done, waiting for its wake-up
    wake()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert task in done and task.cancelled()


async def test_the_delivery_worker_ends_when_cancelled_as_it_is_woken(db: Database) -> None:
    worker = DeliveryWorker(db, LocalOutbox(db), TokenCodec([b"k" * 32]), "http://127.0.0.1",
                            poll_interval=30)
    await _cancelled_while_woken(worker.run, worker._wake.set)


async def test_the_webhook_sender_ends_when_cancelled_as_it_is_woken(db: Database) -> None:
    sender = WebhookSender(db, poll_interval=30)
    await _cancelled_while_woken(sender.run, sender._wake.set)

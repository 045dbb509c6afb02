"""Retries with backoff (injectable clock), restarts, and several workers at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa

from mailbeacon.model.clock import now_us
from mailbeacon.send.relay import Relay
from mailbeacon.send.worker import DeliveryWorker, RetryPolicy
from mailbeacon.storage.schema import deliveries
from tests.support import ManualClock, Service, SmtpRelay

MINUTE = 60 * 1_000_000


def test_retry_policy_doubles_until_the_deadline() -> None:
    policy = RetryPolicy(first=600, max_age=8 * 3600)
    start = 0
    now, delays = start, []
    for attempt in range(1, 20):
        nxt = policy.next_attempt(attempt, start, now)
        if nxt is None:
            break
        delays.append((nxt - now) // MINUTE)
        now = nxt
    assert delays == [10, 20, 40, 80, 160, 170]  # doubling, the last one cut at 8 hours
    assert now == 8 * 60 * MINUTE


@pytest.fixture
async def service(service_factory: Any, smtp_relay: SmtpRelay) -> AsyncIterator[Service]:
    """A service whose delivery worker does not run: each test drives its own."""
    async with service_factory(relay=smtp_relay.url, run_worker=False) as svc:
        await svc.add_domain("example.com")
        yield svc


async def _worker(service: Service, relay: SmtpRelay, clock: ManualClock) -> DeliveryWorker:
    return DeliveryWorker(service.runtime.db, Relay.from_url(relay.url), service.runtime.codec,
                          "http://127.0.0.1:8080", retry=RetryPolicy(600, 8 * 3600),
                          clock=clock)


async def test_temporary_failures_are_retried_then_given_up(service: Service,
                                                             smtp_relay: SmtpRelay) -> None:
    clock = ManualClock(now_us() + 1_000_000)
    worker = await _worker(service, smtp_relay, clock)
    smtp_relay.reply = lambda rcpt: "451 4.3.0 Try again later"
    await service.send(to="alice@example.org", subject="x", text="y")
    assert await worker.run_once() == 1
    assert await worker.run_once() == 0  # not due yet
    clock.now += 9 * MINUTE
    assert await worker.run_once() == 0
    clock.now += 1 * MINUTE
    assert await worker.run_once() == 1  # attempt 2, ten minutes later
    for minutes in (20, 40, 80, 160, 170):
        clock.now += minutes * MINUTE
        assert await worker.run_once() == 1
    failed = await service.events(event="failed", ascending="yes")
    assert [e["delivery-status"]["attempt-no"] for e in failed] == [1, 2, 3, 4, 5, 6, 7]
    assert [e["severity"] for e in failed] == ["temporary"] * 6 + ["permanent"]
    assert failed[-1]["reason"] == "old"
    assert failed[0]["delivery-status"]["code"] == 451
    assert failed[0]["delivery-status"]["retry-seconds"] == 600
    clock.now += 10**6 * MINUTE
    assert await worker.run_once() == 0  # given up for good


async def test_retry_succeeds_and_survives_a_restart(service: Service, smtp_relay: SmtpRelay,
                                                     service_factory: Any) -> None:
    clock = ManualClock(now_us() + 1_000_000)
    worker = await _worker(service, smtp_relay, clock)
    smtp_relay.reply = lambda rcpt: "421 4.7.0 Busy"
    await service.send(to="alice@example.org", subject="x", text="y")
    assert await worker.run_once() == 1
    smtp_relay.reply = lambda rcpt: None
    # A fresh worker (as after a restart) finds the retry in the database.
    again = DeliveryWorker(service.runtime.db, Relay.from_url(smtp_relay.url),
                           service.runtime.codec, "http://x", clock=clock)
    assert await again.run_once() == 0
    clock.now += 10 * MINUTE
    assert await again.run_once() == 1
    assert len(smtp_relay.received) == 1
    (delivered,) = await service.events(event="delivered")
    assert delivered["delivery-status"]["attempt-no"] == 2


async def test_permanent_failure_is_not_retried(service: Service, smtp_relay: SmtpRelay) -> None:
    clock = ManualClock(now_us() + 1_000_000)
    worker = await _worker(service, smtp_relay, clock)
    smtp_relay.reply = lambda rcpt: "550 5.1.1 No such user"
    await service.send(to="alice@example.org", subject="x", text="y")
    assert await worker.run_once() == 1
    clock.now += 10**4 * MINUTE
    assert await worker.run_once() == 0
    (failed,) = await service.events(event="failed")
    assert failed["severity"] == "permanent" and failed["reason"] == "bounce"


async def test_several_workers_never_send_twice(service: Service,
                                                smtp_relay: SmtpRelay) -> None:
    """Four workers claim from one database at once; each message leaves once."""
    for i in range(60):
        await service.send(to=f"user{i}@example.org", subject="x", text="y")
    # After the sends, so that all 60 are due however long sending took.
    clock = ManualClock(now_us() + 1_000_000)
    workers = [DeliveryWorker(service.runtime.db, Relay.from_url(smtp_relay.url),
                              service.runtime.codec, "http://x", concurrency=3, clock=clock)
               for _ in range(4)]

    async def drain(worker: DeliveryWorker) -> int:
        total = 0
        while handled := await worker.run_once():
            total += handled
        return total

    counts = await asyncio.gather(*(drain(w) for w in workers))
    assert sum(counts) == 60
    recipients = [r.recipients[0] for r in smtp_relay.received]
    assert len(recipients) == 60 and len(set(recipients)) == 60
    with service.runtime.db.read() as conn:
        statuses = conn.execute(sa.select(deliveries.c.status, sa.func.count())
                                .group_by(deliveries.c.status)).all()
    assert dict(statuses) == {"delivered": 60}


async def test_expired_lease_is_taken_over(service: Service, smtp_relay: SmtpRelay) -> None:
    """A worker that died mid-send leaves a lease; after it expires the job runs again."""
    clock = ManualClock(now_us() + 1_000_000)
    worker = await _worker(service, smtp_relay, clock)
    await service.send(to="alice@example.org", subject="x", text="y")
    jobs = await asyncio.to_thread(worker._claim, 10)  # claimed, then the worker "dies"
    assert len(jobs) == 1
    assert await worker.run_once() == 0  # the lease still holds
    clock.now += 6 * MINUTE
    assert await worker.run_once() == 1
    (delivered,) = await service.wait_events(1, event="delivered")
    assert delivered["delivery-status"]["attempt-no"] == 2

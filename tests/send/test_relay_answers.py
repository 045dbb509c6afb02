"""The relay's answers are classified like returned bounces, with the same effects (issue 18.2).

The `smtp_relay` fixture answers RCPT as each test says; the worker runs on an injected
clock so that retries and the give-up come on demand.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa

from mailbeacon.model.clock import now_us
from mailbeacon.send.relay import Relay
from mailbeacon.send.worker import DeliveryWorker, RetryPolicy
from mailbeacon.storage.schema import soft_bounces, suppressions
from tests.support import ManualClock, Service, SmtpRelay

MINUTE = 60 * 1_000_000
ADDRESS = "alice@example.org"


class Clock(ManualClock):
    """Moved by hand, never behind the real clock: a send's delivery is due at the real
    time of its intake, however slowly the test runs."""

    def __call__(self) -> int:
        return max(self.now, now_us())


@pytest.fixture
async def service(service_factory: Any, smtp_relay: SmtpRelay) -> AsyncIterator[Service]:
    async with service_factory(relay=smtp_relay.url, run_worker=False) as svc:
        await svc.add_domain("example.com")
        yield svc


def _worker(service: Service, relay: SmtpRelay, clock: Clock,
            retry: RetryPolicy | None = None) -> DeliveryWorker:
    return DeliveryWorker(service.runtime.db, Relay.from_url(relay.url), service.runtime.codec,
                          "http://127.0.0.1:8080", retry=retry or RetryPolicy(600, 8 * 3600),
                          clock=clock)


def _lists(service: Service) -> tuple[list[Any], int]:
    with service.runtime.db.read() as conn:
        found = conn.execute(sa.select(suppressions.c.kind, suppressions.c.address,
                                       suppressions.c.code, suppressions.c.error)).all()
        count = conn.execute(sa.select(soft_bounces.c.count)
                             .where(soft_bounces.c.address == ADDRESS)).scalar()
    return list(found), int(count or 0)


async def test_a_hard_refusal_suppresses_as_a_returned_bounce_does(
        service: Service, smtp_relay: SmtpRelay) -> None:
    worker = _worker(service, smtp_relay, Clock(now_us() + 1_000_000))
    smtp_relay.reply = lambda rcpt: "550 5.1.1 <alice@example.org>: user unknown"
    await service.send(to=ADDRESS, subject="x", text="y")
    assert await worker.run_once() == 1
    (failed,) = await service.events(event="failed")
    assert failed["severity"] == "permanent"
    assert failed["delivery-status"]["bounce-category"] == "hard"
    assert failed["delivery-status"]["enhanced-code"] == "5.1.1"
    ((kind, address, code, error),), _ = _lists(service)
    assert (kind, address, code) == ("bounce", ADDRESS, "550") and "user unknown" in error
    # The next send is stopped before the relay.
    smtp_relay.reply = lambda rcpt: None
    await service.send(to=ADDRESS, subject="again", text="y")
    assert await worker.run_once() == 1
    assert smtp_relay.received == []
    assert (await service.events(event="failed"))[0]["reason"] == "suppress-bounce"


@pytest.mark.parametrize("answer", ["550 5.7.1 Message rejected as spam",
                                    "554 5.7.26 DMARC policy violation",
                                    "451 4.7.1 Client host rejected: blocked using a DNSBL"])
async def test_policy_blocks_are_recorded_not_suppressed_nor_counted(
        service: Service, smtp_relay: SmtpRelay, answer: str) -> None:
    worker = _worker(service, smtp_relay, Clock(now_us() + 1_000_000))
    smtp_relay.reply = lambda rcpt: answer
    await service.send(to=ADDRESS, subject="x", text="y")
    assert await worker.run_once() == 1
    (failed,) = await service.events(event="failed")
    assert failed["delivery-status"]["bounce-category"] == "policy"
    assert _lists(service) == ([], 0)


async def test_soft_failures_count_toward_the_limit(service: Service,
                                                    smtp_relay: SmtpRelay) -> None:
    """A soft 5xx (mailbox full) fails the delivery and counts; at the domain's limit
    the address is suppressed."""
    r = await service.client.put("/v3/domains/example.com", data={"soft_bounce_limit": "2"})
    assert r.status_code == 200
    worker = _worker(service, smtp_relay, Clock(now_us() + 1_000_000))
    smtp_relay.reply = lambda rcpt: "552 5.2.2 Mailbox full, over quota"
    await service.send(to=ADDRESS, subject="x", text="y")
    assert await worker.run_once() == 1
    (failed,) = await service.events(event="failed")
    assert failed["severity"] == "permanent"
    assert failed["delivery-status"]["bounce-category"] == "soft"
    assert _lists(service) == ([], 1)
    await service.send(to=ADDRESS, subject="x", text="y")
    assert await worker.run_once() == 1
    found, count = _lists(service)
    assert count == 2
    assert [(kind, address) for kind, address, _, _ in found] == [("bounce", ADDRESS)]
    assert "2 soft bounces (limit 2)" in found[0][3]


async def test_the_give_up_counts(service: Service, smtp_relay: SmtpRelay) -> None:
    """4xx answers are retried; when the worker gives up, the delivery counts once."""
    r = await service.client.put("/v3/domains/example.com", data={"soft_bounce_limit": "2"})
    assert r.status_code == 200
    clock = Clock(now_us() + 1_000_000)
    # Give up ten minutes after the first attempt: attempt 1, then attempt 2 is the last.
    worker = _worker(service, smtp_relay, clock, RetryPolicy(600, 600))
    smtp_relay.reply = lambda rcpt: "452 4.2.2 Mailbox full"
    for _ in range(2):
        await service.send(to=ADDRESS, subject="x", text="y")
        assert await worker.run_once() == 1
        clock.now += 10 * MINUTE
        assert await worker.run_once() == 1
    failed = await service.events(event="failed", ascending="yes")
    assert [e["reason"] for e in failed] == ["generic", "old"] * 2
    found, count = _lists(service)
    assert count == 2 and [kind for kind, _, _, _ in found] == ["bounce"]


async def test_a_retried_answer_that_then_succeeds_counts_nothing(
        service: Service, smtp_relay: SmtpRelay) -> None:
    """Greylisting answers 4xx to a first attempt: not a bounce."""
    clock = Clock(now_us() + 1_000_000)
    worker = _worker(service, smtp_relay, clock)
    smtp_relay.reply = lambda rcpt: "450 4.2.0 Greylisted, please try again later"
    await service.send(to=ADDRESS, subject="x", text="y")
    assert await worker.run_once() == 1
    smtp_relay.reply = lambda rcpt: None
    clock.now += 10 * MINUTE
    assert await worker.run_once() == 1
    assert len(smtp_relay.received) == 1
    assert _lists(service) == ([], 0)


async def test_relay_and_returned_soft_bounces_count_together(
        service: Service, smtp_relay: SmtpRelay) -> None:
    """One counter, whichever way a soft bounce arrived."""
    from tests.support import corpus_file

    r = await service.client.put("/v3/domains/example.com", data={"soft_bounce_limit": "2"})
    assert r.status_code == 200
    clock = Clock(now_us() + 1_000_000)
    worker = _worker(service, smtp_relay, clock)
    await service.send(to=ADDRESS, subject="x", text="y")  # accepted, then bounces later
    assert await worker.run_once() == 1
    verp = smtp_relay.received[0].sender
    smtp_relay.reply = lambda rcpt: "552 5.2.2 Mailbox full"
    await service.send(to=ADDRESS, subject="x", text="y")
    assert await worker.run_once() == 1
    assert _lists(service) == ([], 1)
    mailbox_full = corpus_file("bsd/lhost-amazonses-03.eml")  # 5.2.2, returned by mail
    status = await service.runtime.inbound.receive(mailbox_full, [verp])
    assert status == "processed"
    found, count = _lists(service)
    assert count == 2 and [kind for kind, _, _, _ in found] == ["bounce"]


async def test_no_answer_from_the_relay_counts_nothing(service: Service,
                                                       smtp_relay: SmtpRelay) -> None:
    """A connection failure is the relay's trouble, not the address's."""
    from tests.support import free_port

    worker = DeliveryWorker(service.runtime.db,
                            Relay.from_url(f"smtp+plain://127.0.0.1:{free_port()}", 5),
                            service.runtime.codec, "http://x",
                            clock=Clock(now_us() + 1_000_000))
    await service.send(to=ADDRESS, subject="x", text="y")
    assert await worker.run_once() == 1
    (failed,) = await service.events(event="failed")
    assert failed["severity"] == "temporary"
    assert _lists(service) == ([], 0)

"""A slow or endless webhook endpoint holds its own posts and nothing else (issue 20.1)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from mailbeacon.model.clock import now_us
from mailbeacon.webhooks.sender import PER_ENDPOINT, WebhookSender
from mailbeacon.webhooks.store import signing_key
from tests.support import Service
from tests.webhooks.hostile import HostileEndpoint
from tests.webhooks.receiver import Receiver

BASE = "/v3/domains/{}/webhooks"


async def _subscribe(service: Service, domain: str, url: str) -> None:
    r = await service.client.post(BASE.format(domain), data={"id": "accepted", "url": url})
    assert r.status_code == 200, r.text


async def _until(check: Any, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.05)


@pytest.fixture
def trickle() -> Iterator[HostileEndpoint]:
    found = HostileEndpoint("trickle", interval=0.5).start()
    yield found
    found.stop()


@pytest.fixture
async def quiet(service_factory: Any) -> AsyncIterator[Service]:
    """No worker, no sender running: the test drives a sender."""
    async with service_factory(run_worker=False) as svc:
        await svc.add_domain("example.com")
        yield svc


async def test_a_trickling_endpoint_does_not_hold_other_domains(
        service_factory: Any, trickle: HostileEndpoint) -> None:
    """25 posts stuck on one endpoint (each would take 500 s: a byte every 0.5 s) while
    another domain's posts to a fast endpoint go through at once."""
    async with service_factory(webhook_timeout=60.0) as service:
        await service.add_domain("example.com")
        await service.add_domain("fast.example")
        fast = Receiver(lambda: signing_key(service.runtime.db, "fast.example")).start()
        try:
            await _subscribe(service, "example.com", trickle.url)
            await _subscribe(service, "fast.example", fast.url)
            for i in range(25):
                await service.send(to=f"user{i}@example.org", subject="x", text="y")
            await _until(lambda: trickle.open >= PER_ENDPOINT, 20)
            for i in range(3):
                await service.send("fast.example", to=f"f{i}@example.org", subject="x",
                                   text="y", **{"from": "a@fast.example"})
            await _until(lambda: len(fast.events()) == 3, 5)  # stuck posts: 60 s more
            assert trickle.open == PER_ENDPOINT  # the slow endpoint has its share, no more
            assert trickle.requests == PER_ENDPOINT
        finally:
            fast.stop()


async def test_the_timeout_bounds_the_whole_post(quiet: Service,
                                                 trickle: HostileEndpoint) -> None:
    """MAILBEACON_WEBHOOK_TIMEOUT is for the whole exchange, not for each read."""
    sender = WebhookSender(quiet.runtime.db, timeout=1.0)
    await _subscribe(quiet, "example.com", trickle.url)
    await quiet.send(to="alice@example.org", subject="x", text="y")
    # Before: a read every 0.5 s kept a per-read timeout of 1 s from ever firing (500 s).
    assert await asyncio.wait_for(sender.run_once(), 15) == 1
    r = await quiet.client.get(BASE.format("example.com") + "/deliveries")
    (item,) = r.json()["items"]
    assert item["status"] == "pending" and item["last-error"] == "timed out"


async def test_a_huge_answer_is_not_read_whole(quiet: Service) -> None:
    huge = HostileEndpoint("huge").start()
    try:
        sender = WebhookSender(quiet.runtime.db, timeout=30.0)
        await _subscribe(quiet, "example.com", huge.url)
        await quiet.send(to="alice@example.org", subject="x", text="y")
        assert await asyncio.wait_for(sender.run_once(), 60) == 1
        await asyncio.sleep(0.5)  # the server notices the closed connection
        # 64 KB read, then the connection dropped: what the server got rid of is what the
        # socket buffers took (a few MB), not 100 MB.
        assert huge.sent < 30_000_000, huge.sent
        r = await quiet.client.get(BASE.format("example.com") + "/deliveries")
        (item,) = r.json()["items"]
        assert item["status"] == "done" and item["last-code"] == 200
        assert item["last-error"] == "y" * 500
    finally:
        huge.stop()


async def test_claims_follow_finished_posts(quiet: Service, trickle: HostileEndpoint) -> None:
    """A sender with 2 slots per endpoint: the slow endpoint keeps 2, the fast one uses
    the rest, and its rows are claimed as its posts end."""
    fast = Receiver(lambda: signing_key(quiet.runtime.db, "example.com")).start()
    sender = WebhookSender(quiet.runtime.db, timeout=60.0, concurrency=4, per_endpoint=2,
                           poll_interval=0.1, clock=lambda: now_us() + 1_000_000)
    task = asyncio.create_task(sender.run())
    try:
        r = await quiet.client.post(BASE.format("example.com"),
                                    data={"id": "accepted", "url": [trickle.url, fast.url]})
        assert r.status_code == 200
        for i in range(10):
            await quiet.send(to=f"user{i}@example.org", subject="x", text="y")
        await _until(lambda: len(fast.events()) == 10, 10)
        assert trickle.requests == 2 and trickle.open == 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        fast.stop()

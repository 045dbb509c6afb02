"""Webhooks: API, signed posts to a real receiver, outcomes, retries, replay."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from mailbeacon.model.clock import now_us
from mailbeacon.webhooks.sender import RETRY_DELAYS, WebhookSender
from mailbeacon.webhooks.store import signing_key
from tests.support import Service, SmtpRelay
from tests.webhooks.receiver import Receiver

BASE = "/v3/domains/example.com/webhooks"


@pytest.fixture
def receiver(service: Service) -> Iterator[Receiver]:
    found = Receiver(lambda: signing_key(service.runtime.db, "example.com")).start()
    yield found
    found.stop()


async def _subscribe(service: Service, webhook: str, *urls: str) -> None:
    r = await service.client.post(BASE, data={"id": webhook, "url": list(urls)})
    assert r.status_code == 200, r.text


async def _until(check: Any, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


async def test_webhooks_api(service: Service) -> None:
    client = service.client
    await _subscribe(service, "delivered", "https://hooks.example.com/a",
                     "https://hooks.example.com/b")
    r = await client.get(BASE)
    assert r.json() == {"webhooks": {"delivered": {"urls": ["https://hooks.example.com/a",
                                                            "https://hooks.example.com/b"]}}}
    r = await client.put(f"{BASE}/delivered", data={"url": "https://hooks.example.com/c"})
    assert r.json()["webhook"]["urls"] == ["https://hooks.example.com/c"]
    assert (await client.get(f"{BASE}/delivered")).json() == {
        "webhook": {"urls": ["https://hooks.example.com/c"]}}
    r = await client.delete(f"{BASE}/delivered")
    assert r.status_code == 200 and r.json()["webhook"]["urls"] == [
        "https://hooks.example.com/c"]
    assert (await client.get(f"{BASE}/delivered")).status_code == 404
    for data, words in (
        ({"id": "nonsense", "url": "https://x.example"}, "Unknown webhook id"),
        ({"id": "opened", "url": "ftp://x.example"}, "http(s)"),
        ({"id": "opened", "url": "https://user:secret@x.example/\n"}, "line breaks"),
        ({"id": "opened", "url": [f"https://x.example/{i}" for i in range(4)]}, "At most 3"),
        ({"id": "opened"}, "'url'"),
    ):
        r = await client.post(BASE, data=data)
        assert r.status_code == 400, data
        assert words in r.json()["message"] and "secret" not in r.json()["message"]
    await _subscribe(service, "opened", "https://x.example/1")
    r = await client.post(BASE, data={"id": "opened", "url": "https://x.example/2"})
    assert r.status_code == 400 and "already exists" in r.json()["message"]


async def test_signed_posts_reach_the_receiver(service: Service, smtp_relay: SmtpRelay,
                                               receiver: Receiver) -> None:
    await _subscribe(service, "accepted", receiver.url)
    await _subscribe(service, "delivered", receiver.url)
    await service.send(to="alice@example.org", subject="x", text="y")
    await _until(lambda: len(receiver.events()) == 2)
    assert receiver.forged == 0
    stored = {e["id"]: e for e in await service.events()}
    for event in receiver.events():
        assert stored[event["id"]] == event  # the same JSON the Events API serves
    r = await service.client.get(f"{BASE}/deliveries")
    assert [i["status"] for i in r.json()["items"]] == ["done", "done"]
    assert r.json()["counts"] == {"done": 2}


async def test_first_opened_only_once(service: Service, smtp_relay: SmtpRelay,
                                      receiver: Receiver) -> None:
    await _subscribe(service, "first_opened", receiver.url)
    await service.send(to="alice@example.org", subject="x", html="<p>hi</p>")
    (item,) = await smtp_relay.wait_for(1)
    (pixel,) = re.findall(r'src="([^"]+/o/[a-z0-9]+)"', item.part("text/html"))
    for _ in range(3):
        await service.hit(pixel)
    await _until(lambda: len(receiver.events()) >= 1)
    await asyncio.sleep(1.0)
    (first,) = receiver.events()
    assert first["event"] == "first_opened"


@pytest.fixture
async def quiet(service_factory: Any) -> AsyncIterator[Service]:
    """A service whose worker and webhook sender do not run: tests drive a sender."""
    async with service_factory(run_worker=False) as svc:
        await svc.add_domain("example.com")
        yield svc


@pytest.fixture
def quiet_receiver(quiet: Service) -> Iterator[Receiver]:
    found = Receiver(lambda: signing_key(quiet.runtime.db, "example.com")).start()
    yield found
    found.stop()


def _sender(service: Service, clock: list[int], timeout: float = 5.0) -> WebhookSender:
    return WebhookSender(service.runtime.db, timeout=timeout, clock=lambda: clock[0])


async def test_outcomes_and_retry_schedule(quiet: Service, quiet_receiver: Receiver) -> None:
    clock = [now_us() + 1_000_000]
    sender = _sender(quiet, clock)
    await _subscribe(quiet, "accepted", quiet_receiver.url)
    quiet_receiver.status = 500
    await quiet.send(to="alice@example.org", subject="x", text="y", **{"o:testmode": "no"})
    assert await sender.run_once() == 1
    for delay in RETRY_DELAYS:
        assert await sender.run_once() == 0  # not yet
        clock[0] += delay * 1_000_000 - 1_000
        assert await sender.run_once() == 0
        clock[0] += 1_000
        assert await sender.run_once() == 1
    clock[0] += 10**12
    assert await sender.run_once() == 0
    r = await quiet.client.get(f"{BASE}/deliveries", params={"status": "failed"})
    (item,) = r.json()["items"]
    assert item["attempts"] == 7 and item["last-code"] == 500
    # Once the endpoint works again, a replay gets it through.
    quiet_receiver.status = 200
    r = await quiet.client.post(f"{BASE}/deliveries/replay")
    assert r.json()["count"] == 1
    assert await sender.run_once() == 1
    assert len(quiet_receiver.events()) == 8  # seven failures and a success, all signed
    assert quiet_receiver.forged == 0


async def test_406_is_not_retried(quiet: Service, quiet_receiver: Receiver) -> None:
    clock = [now_us() + 1_000_000]
    sender = _sender(quiet, clock)
    await _subscribe(quiet, "accepted", quiet_receiver.url)
    quiet_receiver.status = 406
    await quiet.send(to="alice@example.org", subject="x", text="y")
    assert await sender.run_once() == 1
    clock[0] += 10**12
    assert await sender.run_once() == 0
    r = await quiet.client.get(f"{BASE}/deliveries")
    assert r.json()["items"][0]["status"] == "rejected"


async def test_hanging_and_refusing_endpoints_are_retried(quiet: Service,
                                                          quiet_receiver: Receiver) -> None:
    from tests.support import free_port

    clock = [now_us() + 1_000_000]
    sender = _sender(quiet, clock, timeout=0.3)
    quiet_receiver.delay = 1.0
    await _subscribe(quiet, "accepted", quiet_receiver.url, f"http://127.0.0.1:{free_port()}/x")
    await quiet.send(to="alice@example.org", subject="x", text="y")
    started = asyncio.get_running_loop().time()
    assert await sender.run_once() == 2
    assert asyncio.get_running_loop().time() - started < 1.0  # the hang did not hold us
    r = await quiet.client.get(f"{BASE}/deliveries")
    items = r.json()["items"]
    assert {i["status"] for i in items} == {"pending"}
    assert {i["last-code"] for i in items} == {None}
    assert any(i["last-error"] == "timed out" for i in items)


async def test_signing_key_rotation_and_test_endpoint(service: Service,
                                                      receiver: Receiver) -> None:
    old = (await service.client.get(f"{BASE}/signing_key")).json()["http_signing_key"]
    new = (await service.client.post(f"{BASE}/signing_key")).json()["http_signing_key"]
    assert old != new and new.startswith("key-")
    r = await service.client.post(f"{BASE}/test", data={"url": receiver.url,
                                                        "event": "clicked"})
    assert r.json()["code"] == 200 and r.json()["outcome"] == "done"
    (event,) = receiver.events()  # verified with the new key
    assert event["event"] == "clicked"
    receiver.status = 500
    r = await service.client.post(f"{BASE}/test", data={"url": receiver.url})
    assert r.json()["code"] == 500 and r.json()["outcome"] == "retry"


async def test_private_addresses_can_be_forbidden(quiet: Service, quiet_receiver: Receiver) -> None:
    clock = [now_us() + 1_000_000]
    sender = WebhookSender(quiet.runtime.db, clock=lambda: clock[0], forbid_private=True)
    await _subscribe(quiet, "accepted", quiet_receiver.url)  # 127.0.0.1: not public
    await quiet.send(to="alice@example.org", subject="x", text="y")
    assert await sender.run_once() == 1
    assert quiet_receiver.events() == []
    r = await quiet.client.get(f"{BASE}/deliveries")
    assert "private address" in r.json()["items"][0]["last-error"]


async def test_receiver_down_for_an_hour(quiet: Service, quiet_receiver: Receiver) -> None:
    """Every event reaches the quiet_receiver once it is back, none twice."""
    clock = [now_us() + 1_000_000]
    sender = _sender(quiet, clock)
    await _subscribe(quiet, "accepted", quiet_receiver.url)
    quiet_receiver.status = 503
    for i in range(10):
        await quiet.send(to=f"user{i}@example.org", subject="x", text="y")
    minute = 60 * 1_000_000
    for _ in range(60):  # an hour of simulated time, a check every minute
        await sender.run_once()
        clock[0] += minute
    failed_posts = len(quiet_receiver.events())
    assert failed_posts >= 30  # tried at 0, 5, 15 and 30 minutes at least
    quiet_receiver.status = 200
    quiet_receiver.received.clear()
    for _ in range(4 * 60):  # the next retries fall due within the following hours
        await sender.run_once()
        clock[0] += minute
    ids = [e["id"] for e in quiet_receiver.events()]
    assert len(ids) == 10 and len(set(ids)) == 10
    stored = {e["id"] for e in await quiet.events(event="accepted")}
    assert set(ids) == stored

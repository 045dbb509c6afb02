"""One delivery that cannot be composed fails alone: its neighbours in the same round are
relayed exactly once, however many leases expire afterwards (issue 19, section 1).

The poison is written straight into the stored message, behind intake's checks, because
the worker's isolation is the defence for whatever intake lets through."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa

from mailbeacon.model.clock import now_us
from mailbeacon.send.compose_pool import ComposePool
from mailbeacon.send.relay import Relay
from mailbeacon.send.worker import DeliveryWorker
from mailbeacon.storage.schema import deliveries, messages
from tests.support import ManualClock, Service, SmtpRelay

MINUTE = 60 * 1_000_000


@pytest.fixture
async def service(service_factory: Any, smtp_relay: SmtpRelay) -> AsyncIterator[Service]:
    """A service whose delivery worker does not run: the test drives its own."""
    async with service_factory(relay=smtp_relay.url, run_worker=False) as svc:
        await svc.add_domain("example.com")
        await svc.add_domain("shop.example")
        yield svc


def nested_mime(depth: int) -> bytes:
    inner = "Content-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n"
    for level in range(depth):
        inner = (f'Content-Type: multipart/mixed; boundary="b{level}"\r\n\r\n'
                 f"--b{level}\r\n{inner}\r\n--b{level}--\r\n")
    return ("From: shop@example.com\r\nTo: deep@example.org\r\nSubject: deep\r\n"
            f"MIME-Version: 1.0\r\n{inner}").encode()


UNKNOWN_CHARSET = (
    b"From: shop@example.com\r\nTo: charset@example.org\r\nSubject: nope\r\n"
    b'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="x"\r\n\r\n'
    b"--x\r\nContent-Type: text/plain; charset=x-nope\r\n\r\nhello\r\n"
    b"--x\r\nContent-Type: text/html; charset=x-nope\r\n\r\n<p>hello</p>\r\n--x--\r\n")


async def _poison(service: Service, message_id: str, **values: Any) -> None:
    with service.runtime.db.write() as conn:
        conn.execute(messages.update().where(messages.c.message_id == message_id.strip("<>"))
                     .values(**values))


async def _send_round(service: Service) -> tuple[set[str], dict[str, str]]:
    """Innocent messages from two domains to recipients of two domains, and three
    poisoned ones among them; returns the innocent recipients and, per poisoned
    recipient, the words its failure must give."""
    innocent = {"ann@example.net", "bob@example.org", "cat@example.net", "dan@example.org"}
    await service.send(to="ann@example.net", subject="A", text="a", html="<p>a</p>")
    crlf = await service.send(to=["poison@example.org", "bob@example.org"],
                              subject="Hello %recipient.n%", text="x",
                              **{"recipient-variables": json.dumps(
                                  {"poison@example.org": {"n": "ok"},
                                   "bob@example.org": {"n": "Bob"}})})
    await _poison(service, crlf, recipient_variables=json.dumps(
        {"poison@example.org": {"n": "x\r\ny"}, "bob@example.org": {"n": "Bob"}}))
    charset = await service.send(to="charset@example.org", subject="c", text="c")
    await _poison(service, charset, mime=UNKNOWN_CHARSET)
    await service.send("shop.example", to="cat@example.net", subject="C", text="c",
                       **{"from": "shop@shop.example"})
    deep = await service.send(to="deep@example.org", subject="d", text="d")
    await _poison(service, deep, mime=nested_mime(250))
    await service.send("shop.example", to="dan@example.org", subject="D", html="<p>d</p>",
                       **{"from": "shop@shop.example"})
    return innocent, {"poison@example.org": "linefeed or carriage return",
                      "charset@example.org": "unknown charset x-nope",
                      "deep@example.org": "nested too deeply"}


@pytest.mark.parametrize("where", ["thread", "process"])
async def test_poison_fails_alone_and_nothing_is_relayed_twice(
        service: Service, smtp_relay: SmtpRelay, where: str) -> None:
    innocent, poisoned = await _send_round(service)
    clock = ManualClock(now_us() + 1_000_000)
    pool = ComposePool(service.runtime.codec, processes=1,
                       large=0 if where == "process" else 1 << 30)
    worker = DeliveryWorker(service.runtime.db, Relay.from_url(smtp_relay.url),
                            service.runtime.codec, "http://127.0.0.1:8080", clock=clock,
                            compose_pool=pool)
    try:
        assert await worker.run_once() == len(innocent) + len(poisoned)  # one round
        for _ in range(12):  # an hour of lease expiries (5 minutes each)
            clock.now += 6 * MINUTE
            assert await worker.run_once() == 0
    finally:
        worker.close()

    relayed = Counter(r.recipients[0] for r in smtp_relay.received)
    assert relayed == {address: 1 for address in innocent}
    delivered = await service.events(event="delivered") + await service.events(
        "shop.example", event="delivered")
    assert sorted(e["recipient"] for e in delivered) == sorted(innocent)
    failed = {e["recipient"]: e for e in await service.events(event="failed")}
    assert set(failed) == set(poisoned)
    for address, words in poisoned.items():
        event = failed[address]
        assert event["severity"] == "permanent"
        message = event["delivery-status"]["message"]
        assert message.startswith("could not compose the message: ")
        assert words in message
    with service.runtime.db.read() as conn:
        statuses = {r.recipient: r.status for r in conn.execute(
            sa.select(deliveries.c.recipient, deliveries.c.status))}
    assert statuses == {**{a: "delivered" for a in innocent},
                        **{a: "failed" for a in poisoned}}


async def test_a_result_that_cannot_be_recorded_holds_back_no_other(
        service: Service, smtp_relay: SmtpRelay) -> None:
    """A message row whose stored headers are unreadable: its delivery is relayed and
    its status stored without an event; its neighbour is recorded in full; neither is
    relayed again."""
    await service.send(to="ann@example.net", subject="A", text="a")
    broken = await service.send(to="bob@example.org", subject="B", text="b")
    await _poison(service, broken, headers="{not json")
    clock = ManualClock(now_us() + 1_000_000)
    worker = DeliveryWorker(service.runtime.db, Relay.from_url(smtp_relay.url),
                            service.runtime.codec, "http://127.0.0.1:8080", clock=clock)
    try:
        assert await worker.run_once() == 2
        for _ in range(3):
            clock.now += 6 * MINUTE
            assert await worker.run_once() == 0
    finally:
        worker.close()
    assert sorted(r.recipients[0] for r in smtp_relay.received) == [
        "ann@example.net", "bob@example.org"]
    (delivered,) = await service.events(event="delivered")
    assert delivered["recipient"] == "ann@example.net"
    with service.runtime.db.read() as conn:
        statuses = {r.recipient: r.status for r in conn.execute(
            sa.select(deliveries.c.recipient, deliveries.c.status))}
    assert statuses == {"ann@example.net": "delivered", "bob@example.org": "delivered"}

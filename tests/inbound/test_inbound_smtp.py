"""Real bounce and complaint emails from the corpus, through the inbound SMTP socket."""

from __future__ import annotations

import asyncio
import re
import smtplib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import sqlalchemy as sa

from mailbeacon.storage.schema import inbound_messages, suppressions
from tests.support import Service, SmtpRelay, corpus_file, free_port


@pytest.fixture
async def inbound(service_factory: Callable[..., Any],
                  smtp_relay: SmtpRelay) -> AsyncIterator[tuple[Service, int]]:
    port = free_port()
    async with service_factory(relay=smtp_relay.url, smtp=f"127.0.0.1:{port}",
                               smtp_max_bytes=40 * 1024 * 1024) as svc:
        await svc.add_domain("example.com")
        yield svc, port


async def _deliver(service: Service, relay: SmtpRelay, to: str, **fields: Any) -> str:
    """Send a message and return its VERP envelope sender."""
    before = len(relay.received)
    await service.send(to=to, subject="Newsletter", text="hello", **fields)
    received = await relay.wait_for(before + 1)
    await service.wait_events(before + 1, event="delivered")
    return received[before].sender


def _bounce(port: int, data: bytes, rcpt: str, sender: str = "") -> tuple[int, bytes]:
    data = re.sub(rb"\r?\n", b"\r\n", data)  # the corpus has LF line ends; SMTP has CRLF
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo()
        client.mail(sender)  # null sender, as bounces come
        code, reply = client.rcpt(rcpt)
        assert code == 250, reply
        return client.data(data)


def _suppressed(service: Service) -> list[tuple[str, str]]:
    with service.runtime.db.read() as conn:
        return [(r.kind, r.address) for r in conn.execute(
            sa.select(suppressions).order_by(suppressions.c.kind, suppressions.c.address))]


async def test_hard_bounce_by_verp(inbound: tuple[Service, int], smtp_relay: SmtpRelay) -> None:
    service, port = inbound
    verp = await _deliver(service, smtp_relay, "kijitora@example.org")
    code, reply = await asyncio.to_thread(
        _bounce, port, corpus_file("bsd/lhost-activehunter-01.eml"), verp)
    assert code == 250 and b"processed" in reply, reply
    (failed,) = await service.events(event="failed")
    assert failed["recipient"] == "kijitora@example.org"
    assert failed["severity"] == "permanent" and failed["reason"] == "userunknown"
    assert failed["bounce-match"] == "verp"
    assert failed["delivery-status"]["enhanced-code"] == "5.1.1"
    assert failed["flags"]["is-delayed-bounce"] is True
    assert _suppressed(service) == [("bounce", "kijitora@example.org")]
    # The suppression now stops the next message.
    await service.send(to="kijitora@example.org", subject="again", text="x")
    events = await service.wait_events(2, event="failed")
    assert events[0]["reason"] == "suppress-bounce"


async def test_soft_bounces_count_to_the_limit(inbound: tuple[Service, int],
                                               smtp_relay: SmtpRelay) -> None:
    service, port = inbound
    r = await service.client.put("/v3/domains/example.com", data={"soft_bounce_limit": "2"})
    assert r.status_code == 200
    data = corpus_file("bsd/lhost-amazonses-03.eml")  # mailbox full, 5.2.2
    verp = await _deliver(service, smtp_relay, "kijitora@example.jp")
    await asyncio.to_thread(_bounce, port, data, verp)
    assert _suppressed(service) == []
    (failed,) = await service.events(event="failed")
    assert failed["reason"] == "mailboxfull"
    verp = await _deliver(service, smtp_relay, "kijitora@example.jp")
    await asyncio.to_thread(_bounce, port, b"Received: by relay2.example.net\r\n" + data, verp)
    assert _suppressed(service) == [("bounce", "kijitora@example.jp")]


async def test_policy_blocks_do_not_suppress(inbound: tuple[Service, int],
                                             smtp_relay: SmtpRelay) -> None:
    service, port = inbound
    verp = await _deliver(service, smtp_relay, "kijitora@example.org")
    await asyncio.to_thread(_bounce, port, corpus_file("bsd/lhost-barracuda-01.eml"), verp)
    (failed,) = await service.events(event="failed")
    assert failed["reason"] == "spamdetected"
    assert failed["delivery-status"]["bounce-category"] == "policy"
    assert _suppressed(service) == []


async def test_a_real_complaint_about_another_message_is_kept_unmatched(
        inbound: tuple[Service, int], smtp_relay: SmtpRelay) -> None:
    """The corpus report names an address we mailed, but returns a message we never sent
    (its Message-ID is not ours): an address alone ties nothing (tests/inbound/test_trust.py
    has the tied cases)."""
    service, port = inbound
    address = "this-local-part-does-not-exist-on-yahoo@yahoo.com"
    await _deliver(service, smtp_relay, address)
    code, reply = await asyncio.to_thread(_bounce, port, corpus_file("bsd/arf-02.eml"),
                                          "fbl@example.com", "staff@yahoo.com")
    assert code == 250 and b"unmatched" in reply, reply
    assert await service.events(event="complained") == []
    assert _suppressed(service) == []


async def test_bounce_naming_an_address_alone_is_unmatched(inbound: tuple[Service, int],
                                                           smtp_relay: SmtpRelay) -> None:
    service, port = inbound
    await _deliver(service, smtp_relay, "kijitora@example.org")
    code, reply = await asyncio.to_thread(
        _bounce, port, corpus_file("bsd/lhost-activehunter-01.eml"), "postmaster@example.com")
    assert code == 250 and b"unmatched" in reply, reply
    assert await service.events(event="failed") == []
    assert _suppressed(service) == []


async def test_auto_replies_and_junk_are_kept_not_acted_on(
        inbound: tuple[Service, int], smtp_relay: SmtpRelay) -> None:
    service, port = inbound
    await _deliver(service, smtp_relay, "kijitora@example.net")
    junk = {
        "vacation": corpus_file("bsd/rfc3834-01.eml"),
        "binary": bytes(range(256)) * 4000,
        "truncated": corpus_file("bsd/lhost-activehunter-01.eml")[:700],
        "huge": b"Subject: big\r\nContent-Type: text/plain\r\n\r\n"
                + (b"x" * 998 + b"\r\n") * 30_000,  # 30 MB
    }
    for data in junk.values():
        code, _ = await asyncio.to_thread(_bounce, port, data, "postmaster@example.com")
        assert code == 250
    assert await service.events(event="failed") == []
    assert _suppressed(service) == []
    with service.runtime.db.read() as conn:
        kept = conn.execute(sa.select(inbound_messages.c.status, inbound_messages.c.size)).all()
    assert len(kept) == 4  # every one is kept for inspection
    assert max(size for _, size in kept) > 30_000_000
    # The server is still there.
    verp = await _deliver(service, smtp_relay, "kijitora@example.org")
    code, _ = await asyncio.to_thread(_bounce, port, corpus_file("bsd/lhost-activehunter-01.eml"),
                                      verp)
    assert code == 250


async def test_the_same_report_twice_is_acted_on_once(inbound: tuple[Service, int],
                                                      smtp_relay: SmtpRelay) -> None:
    service, port = inbound
    verp = await _deliver(service, smtp_relay, "kijitora@example.org")
    data = corpus_file("bsd/lhost-activehunter-01.eml")
    await asyncio.to_thread(_bounce, port, data, verp)
    code, reply = await asyncio.to_thread(_bounce, port, data, verp)
    assert code == 250 and b"duplicate" in reply
    assert len(await service.events(event="failed")) == 1


async def test_bounce_mailbox_poll(service: Service, smtp_relay: SmtpRelay) -> None:
    from mailbeacon.inbound.mailbox import MailboxConfig
    from tests.inbound.mailservers import Pop3Server

    verp = await _deliver(service, smtp_relay, "kijitora@example.org")
    server = Pop3Server(username="bounces", password="pw")
    server.start()
    try:
        data = corpus_file("bsd/lhost-activehunter-01.eml").replace(b"\n", b"\r\n")
        # A mailbox keeps the envelope recipient in Delivered-To.
        server.messages.append(f"Delivered-To: {verp}\r\n".encode() + data)
        server.messages.append(corpus_file("bsd/rfc3834-01.eml").replace(b"\n", b"\r\n"))
        config = MailboxConfig.from_url(f"pop3://bounces:pw@127.0.0.1:{server.port}")
        result = await service.runtime.poll_mailbox_once(config)
        assert (result.fetched, result.processed, result.failed) == (2, 2, 0)
        assert server.messages == []  # both handled, so both deleted
    finally:
        server.stop()
    (failed,) = await service.events(event="failed")
    assert failed["bounce-match"] == "verp"
    assert _suppressed(service) == [("bounce", "kijitora@example.org")]


async def test_reply_counts_for_engagement(inbound: tuple[Service, int],
                                           smtp_relay: SmtpRelay) -> None:
    from mailbeacon.storage.schema import contacts

    service, port = inbound
    await _deliver(service, smtp_relay, "kijitora@example.org")
    message_id = smtp_relay.received[0].message["Message-ID"]
    reply = (f"From: Kijitora <kijitora@example.org>\r\nTo: replies@example.com\r\n"
             f"Subject: Re: Newsletter\r\nIn-Reply-To: {message_id}\r\n"
             f"References: {message_id}\r\n\r\nThanks, interesting!\r\n").encode()
    code, reply_text = await asyncio.to_thread(_bounce, port, reply, "replies@example.com",
                                               "kijitora@example.org")
    assert code == 250 and b"processed" in reply_text
    (replied,) = await service.events(event="replied")
    assert replied["recipient"] == "kijitora@example.org"
    with service.runtime.db.read() as conn:
        person = conn.execute(sa.select(contacts)).one()
    assert person.replies == 1 and person.score >= 10


async def test_bounce_marks_the_recipient_state(inbound: tuple[Service, int],
                                                smtp_relay: SmtpRelay) -> None:
    from mailbeacon.storage.schema import recipient_state

    service, port = inbound
    verp = await _deliver(service, smtp_relay, "kijitora@example.org")
    await asyncio.to_thread(_bounce, port, corpus_file("bsd/lhost-activehunter-01.eml"), verp)
    with service.runtime.db.read() as conn:
        state = conn.execute(sa.select(recipient_state)).one()
    assert state.bounced and state.recipient == "kijitora@example.org"

"""Batch sending, test mode, scheduled delivery, messages.mime."""

from __future__ import annotations

import asyncio
import json
import time
from email.utils import formatdate
from typing import Any

from tests.support import Service, SmtpRelay


async def test_batch_of_1000_with_recipient_variables(service: Service,
                                                      smtp_relay: SmtpRelay) -> None:
    people = {f"user{i}@example.org": {"first": f"Name{i}", "id": i} for i in range(1000)}
    started = time.perf_counter()
    r = await service.client.post("/v3/example.com/messages", data={
        "from": "shop@example.com", "to": list(people),
        "subject": "Hello %recipient.first%",
        "text": "Dear %recipient.first%, your id is %recipient.id%.",
        "html": '<p>Dear %recipient.first%</p><a href="https://shop.example.net/u?id=%recipient.id%">'
                "account</a>",
        "recipient-variables": json.dumps(people), "v:campaign": "autumn"})
    intake_seconds = time.perf_counter() - started
    assert r.status_code == 200, r.text
    received = await smtp_relay.wait_for(1000, timeout=120)
    assert len({r.recipients[0] for r in received}) == 1000
    for item in received[:50]:
        rcpt = item.recipients[0]
        msg = item.message
        vars_ = people[rcpt]
        assert msg["To"] == rcpt  # each sees only their own address
        assert msg["Subject"] == f"Hello {vars_['first']}"
        assert f"Dear {vars_['first']}, your id is {vars_['id']}." in item.part("text/plain")
        assert f"<p>Dear {vars_['first']}</p>" in item.part("text/html")
    events = await service.wait_events(300, event="delivered")
    assert all(e["user-variables"] == {"campaign": "autumn"} for e in events)
    print(f"\nintake of a 1,000-recipient batch: {intake_seconds * 1000:.0f} ms")


async def test_batch_links_carry_each_recipients_value(service: Service,
                                                       smtp_relay: SmtpRelay) -> None:
    people = {"a@example.org": {"id": "A1"}, "b@example.org": {"id": "B2"}}
    await service.send(to=list(people), subject="x",
                       html='<a href="https://shop.example.net/?id=%recipient.id%">go</a>',
                       **{"recipient-variables": json.dumps(people)})
    received = await smtp_relay.wait_for(2)
    import re

    for item in received:
        (link,) = re.findall(r'href="([^"]+/c/[a-z0-9]+)">', item.part("text/html"))
        r = await service.hit(link)
        assert r.headers["location"].endswith("?id=" + people[item.recipients[0]]["id"])


async def test_bad_recipient_variables(service: Service) -> None:
    for value, words in (("{not json", "not valid JSON"), ('["a"]', "JSON object")):
        r = await service.client.post("/v3/example.com/messages", data={
            "from": "shop@example.com", "to": "a@example.org", "text": "x",
            "recipient-variables": value})
        assert r.status_code == 400 and words in r.json()["message"]


async def test_testmode_relays_nothing(service: Service, smtp_relay: SmtpRelay) -> None:
    await service.send(to="alice@example.org", subject="x", text="y", **{"o:testmode": "yes"})
    (delivered,) = await service.wait_events(1, event="delivered")
    assert delivered["delivery-status"]["code"] == 650
    (accepted,) = await service.events(event="accepted")
    assert accepted["flags"]["is-test-mode"] is True
    await asyncio.sleep(0.3)
    assert smtp_relay.received == []


async def test_without_a_relay_mail_goes_to_the_local_outbox(service_factory: Any) -> None:
    import sqlalchemy as sa

    from mailbeacon.storage.schema import local_outbox

    async with service_factory() as svc:  # the embedded default: no relay configured
        await svc.add_domain()
        await svc.send(to="alice@example.org", subject="test", text="y",
                       **{"o:testmode": "yes"})
        await svc.send(to="bob@example.org", subject="Hello Bob", html="<p>Hi</p>")
        delivered = await svc.wait_events(2, event="delivered")
        codes = {e["recipient"]: e["delivery-status"]["code"] for e in delivered}
        assert codes == {"alice@example.org": 650, "bob@example.org": 250}
        with svc.runtime.db.read() as conn:
            (kept,) = conn.execute(sa.select(local_outbox)).all()
        assert (kept.recipient, kept.subject) == ("bob@example.org", "Hello Bob")
        assert b"/o/" in kept.data  # tracked like any relayed message


async def test_deliverytime_waits(service: Service, smtp_relay: SmtpRelay) -> None:
    worker = service.runtime.worker
    assert worker is not None
    when = time.time() + 3600
    await service.send(to="alice@example.org", subject="later", text="y",
                       **{"o:deliverytime": formatdate(when)})
    await asyncio.sleep(0.3)
    assert await worker.run_once() == 0
    assert smtp_relay.received == []
    real_clock = worker.clock
    worker.clock = lambda: real_clock() + 3601 * 1_000_000
    worker.wake()
    (item,) = await smtp_relay.wait_for(1)
    assert item.message["Subject"] == "later"


async def test_deliverytime_errors(service: Service) -> None:
    for value, words in (("tomorrow", "RFC 2822"),
                         (formatdate(time.time() + 30 * 86400), "7 days")):
        r = await service.client.post("/v3/example.com/messages", data={
            "from": "shop@example.com", "to": "a@example.org", "text": "x",
            "o:deliverytime": value})
        assert r.status_code == 400 and words in r.json()["message"]


async def test_messages_mime(service: Service, smtp_relay: SmtpRelay) -> None:
    raw = (b"From: Shop <shop@example.com>\r\nTo: list@example.org\r\nSubject: Raw\r\n"
           b"Bcc: hidden@example.org\r\nX-Mailgun-Tag: raw-tag\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: text/html; charset=iso-8859-1\r\n\r\n"
           b"<p>Caf\xe9 <a href=\"https://shop.example.net/\">shop</a></p>\r\n")
    r = await service.client.post("/v3/example.com/messages.mime",
                                  data={"to": "alice@example.org", "v:k": "v"},
                                  files={"message": ("message.mime", raw, "message/rfc822")})
    assert r.status_code == 200, r.text
    (item,) = await smtp_relay.wait_for(1)
    msg = item.message
    assert "Bcc" not in msg and "X-Mailgun-Tag" not in msg
    assert msg["Message-ID"] and msg["To"] == "list@example.org"
    html = item.part("text/html")
    assert "Caf\u00e9" in html and "/c/" in html
    assert msg.get_body(("html",)).get_content_charset() == "iso-8859-1"  # type: ignore[union-attr]
    (delivered,) = await service.wait_events(1, event="delivered")
    assert delivered["tags"] == ["raw-tag"] and delivered["user-variables"] == {"k": "v"}
    r = await service.client.post("/v3/example.com/messages.mime", data={"to": "a@example.org"})
    assert r.status_code == 400 and "'message'" in r.json()["message"]

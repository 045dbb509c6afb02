"""Sending through the API to a real SMTP relay on loopback."""

from __future__ import annotations

import re
from typing import Any

import pytest

from mailbeacon.model.tokens import Kind
from tests.support import Service, SmtpRelay

HTML = ('<html><body><p>Hello <a href="https://shop.example.net/p?a=1&amp;b=2">shop</a> '
        '<a href="mailto:help@example.com">help</a></p></body></html>')
TEXT = "Hello, see https://shop.example.net/text-link. Bye"


def tracked_links(html: str) -> list[str]:
    return re.findall(r'href="(http://[^"]+/c/[a-z0-9]+)">', html)


def pixels(html: str) -> list[str]:
    return re.findall(r'src="(http://[^"]+/o/[a-z0-9]+)"', html)


async def test_send_relays_one_transaction_per_recipient(service: Service,
                                                         smtp_relay: SmtpRelay) -> None:
    message_id = await service.send(
        to=["alice@example.org", "Bob <bob@example.org>"], cc="carol@example.org",
        bcc="dave@example.org", subject="Hello", text=TEXT, html=HTML,
        **{"o:tag": ["November", "news"], "h:X-Campaign": "nov-1", "v:customer": "42"})
    assert re.fullmatch(r"<[0-9a-v]{34}@example\.com>", message_id)
    received = await smtp_relay.wait_for(4)
    assert sorted(r.recipients[0] for r in received) == [
        "alice@example.org", "bob@example.org", "carol@example.org", "dave@example.org"]
    assert all(len(r.recipients) == 1 for r in received)
    # VERP: each envelope sender names its delivery, so a bounce finds its way back.
    senders = {r.sender for r in received}
    assert len(senders) == 4
    for r in received:
        local, _, host = r.sender.partition("@")
        assert host == "example.com" and local.startswith("bounce+") and len(local) <= 64
        token = service.runtime.codec.decode(local.removeprefix("bounce+"))
        assert token.kind is Kind.BOUNCE
        assert token.delivery_id == r.message["X-Mailbeacon-Delivery"]
    msg = received[0].message
    assert msg["Message-ID"] == message_id
    assert msg["X-Campaign"] == "nov-1"
    assert msg["Subject"] == "Hello"
    assert "dave@example.org" not in msg.as_string().split("\n\n", 1)[0]  # Bcc stays hidden
    assert msg["Cc"] == "carol@example.org"
    assert "X-Mailgun-Variables" not in msg  # custom variables stay with us
    # Each recipient gets links signed for them alone.
    links = {r.recipients[0]: tracked_links(r.part("text/html"))[0] for r in received}
    assert len(set(links.values())) == 4
    html = received[0].part("text/html")
    assert 'href="mailto:help@example.com"' in html
    assert len(pixels(html)) == 1
    assert "https://shop.example.net" not in received[0].part("text/plain")


async def test_accepted_and_delivered_events(service: Service, smtp_relay: SmtpRelay) -> None:
    message_id = await service.send(to="alice@example.org", subject="Hi", text="Hello",
                                    **{"o:tag": "Welcome", "v:plan": '{"tier": "gold"}'})
    await smtp_relay.wait_for(1)
    events = await service.wait_events(2)
    delivered, accepted = events[0], events[1]  # newest first
    assert accepted["event"] == "accepted" and delivered["event"] == "delivered"
    for event in events:
        assert event["recipient"] == "alice@example.org"
        assert event["tags"] == ["welcome"]
        assert event["user-variables"] == {"plan": {"tier": "gold"}}
        assert event["message"]["headers"]["message-id"] == message_id.strip("<>")
        assert isinstance(event["timestamp"], float)
    assert delivered["delivery-status"]["code"] == 250
    assert "queued as TEST" in delivered["delivery-status"]["message"]
    assert delivered["delivery-status"]["attempt-no"] == 1


@pytest.mark.parametrize(("reply", "severity", "code"), [
    ("550 5.1.1 No such user here", "permanent", 550),
    ("452 4.2.2 Mailbox full, try later", "temporary", 452),
])
async def test_relay_refusal_is_a_failed_event(service: Service, smtp_relay: SmtpRelay,
                                               reply: str, severity: str, code: int) -> None:
    smtp_relay.reply = lambda rcpt: reply if rcpt.startswith("bad") else None
    await service.send(to=["bad@example.org", "good@example.org"], subject="x", text="y")
    await smtp_relay.wait_for(1)
    failed = await service.wait_events(1, event="failed")
    assert failed[0]["recipient"] == "bad@example.org"
    assert failed[0]["severity"] == severity
    assert failed[0]["delivery-status"]["code"] == code
    assert failed[0]["delivery-status"]["message"] in reply
    delivered = await service.wait_events(1, event="delivered")
    assert delivered[0]["recipient"] == "good@example.org"


async def test_unreachable_relay_is_a_temporary_failure(service_factory: Any) -> None:
    from tests.support import free_port

    async with service_factory(relay=f"smtp+plain://127.0.0.1:{free_port()}",
                               relay_timeout=2.0) as svc:
        await svc.add_domain()
        await svc.send(to="alice@example.org", subject="x", text="y")
        failed = await svc.wait_events(1, event="failed")
    assert failed[0]["severity"] == "temporary"
    assert failed[0]["delivery-status"]["code"] == 0
    assert failed[0]["delivery-status"]["description"]


async def test_attachments_and_inline_images(service: Service, smtp_relay: SmtpRelay) -> None:
    files = [
        ("attachment", ("report.pdf", b"%PDF-1.4 fake", "application/pdf")),
        ("inline", ("logo.png", b"\x89PNG fake", "image/png")),
    ]
    await service.send(to="alice@example.org", subject="Files", text="see attached",
                       html='<p><img src="cid:logo.png"></p>', files=files)
    (received,) = await smtp_relay.wait_for(1)
    parts = {p.get_filename(): p for p in received.message.walk() if p.get_filename()}
    assert parts["report.pdf"].get_content() == b"%PDF-1.4 fake"
    assert parts["report.pdf"].get_content_disposition() == "attachment"
    assert parts["logo.png"]["Content-ID"] == "<logo.png>"
    assert parts["logo.png"].get_content() == b"\x89PNG fake"


@pytest.mark.parametrize(("options", "text_tracked", "html_tracked", "pixel"), [
    ({}, True, True, True),
    ({"o:tracking-clicks": "htmlonly"}, False, True, True),
    ({"o:tracking-clicks": "no"}, False, False, True),
    ({"o:tracking-opens": "no"}, True, True, False),
    ({"o:tracking": "no"}, False, False, False),
    ({"o:tracking": "no", "o:tracking-opens": "yes"}, False, False, True),
])
async def test_tracking_options(service: Service, smtp_relay: SmtpRelay,
                                options: dict[str, str], text_tracked: bool,
                                html_tracked: bool, pixel: bool) -> None:
    await service.send(to="alice@example.org", subject="x", text=TEXT, html=HTML, **options)
    (received,) = await smtp_relay.wait_for(1)
    html, text = received.part("text/html"), received.part("text/plain")
    assert bool(tracked_links(html)) is html_tracked
    assert ("https://shop.example.net/text-link" not in text) is text_tracked
    assert bool(pixels(html)) is pixel


async def test_pixel_location_top(service: Service, smtp_relay: SmtpRelay) -> None:
    await service.send(to="alice@example.org", subject="x", html=HTML,
                       **{"o:tracking-pixel-location-top": "yes"})
    (received,) = await smtp_relay.wait_for(1)
    assert re.match(r"<html><body><img src=\"http://[^\"]+/o/", received.part("text/html"))


async def test_domain_tracking_settings_apply(service: Service, smtp_relay: SmtpRelay) -> None:
    client = service.client
    assert (await client.put("/v3/domains/example.com/tracking/open",
                             data={"active": "no"})).status_code == 200
    assert (await client.put("/v3/domains/example.com/tracking/click",
                             data={"active": "htmlonly"})).status_code == 200
    assert (await client.put("/v3/domains/example.com",
                             data={"tracking_url": "https://email.example.com"})
            ).status_code == 200
    await service.send(to="alice@example.org", subject="x", text=TEXT, html=HTML)
    (received,) = await smtp_relay.wait_for(1)
    html = received.part("text/html")
    assert not re.search(r"/o/[a-z0-9]+", html)
    assert re.search(r'href="https://email\.example\.com/c/[a-z0-9]+"', html)
    assert "https://shop.example.net/text-link" in received.part("text/plain")

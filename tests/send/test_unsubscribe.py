"""Unsubscribes: headers, placeholders, footer, one-click POST, mailto, enforcement."""

from __future__ import annotations

import asyncio
import re
import smtplib
from email.message import EmailMessage
from typing import Any

import pytest
import sqlalchemy as sa

from mailbeacon.storage.schema import suppressions
from tests.support import Service, SmtpRelay, free_port


async def _one(service: Service, relay: SmtpRelay, **fields: Any) -> Any:
    before = len(relay.received)
    await service.send(to=fields.pop("to", "alice@example.org"), subject="News", **fields)
    received = await relay.wait_for(before + 1)
    return received[before]


def _links(header: str) -> tuple[str, str]:
    https, mailto = re.findall(r"<([^>]+)>", header)
    assert mailto.startswith("mailto:")
    return https, mailto.removeprefix("mailto:")


async def test_list_unsubscribe_headers(service: Service, smtp_relay: SmtpRelay) -> None:
    received = await _one(service, smtp_relay, text="hi")
    msg = received.message
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https, mailto = _links(msg["List-Unsubscribe"])
    assert re.fullmatch(r"http://[^/]+/u/[a-z2-7]+", https)
    local, _, host = mailto.partition("@")
    assert host == "example.com" and local.startswith("unsub+") and len(local) <= 64
    # Without tracking too, and h: cannot set them (tests/send/test_list_unsubscribe_header.py).


async def test_get_never_unsubscribes(service: Service, smtp_relay: SmtpRelay) -> None:
    received = await _one(service, smtp_relay, text="hi")
    https, _ = _links(received.message["List-Unsubscribe"])
    for _ in range(3):  # link scanners prefetch, sometimes more than once
        r = await service.hit(https)
        assert r.status_code == 200
        assert "<form" in r.text and "List-Unsubscribe" in r.text
    assert (await service.client.head(https.split("8080", 1)[1], auth=None)).status_code == 200
    assert await service.events(event="unsubscribed") == []


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
async def test_one_click_post(service: Service, smtp_relay: SmtpRelay, encoding: str) -> None:
    received = await _one(service, smtp_relay, text="hi", **{"o:tag": "weekly"})
    https, _ = _links(received.message["List-Unsubscribe"])
    path = https.split("8080", 1)[1]
    if encoding == "urlencoded":  # the exact RFC 8058 body
        r = await service.client.post(path, content=b"List-Unsubscribe=One-Click", auth=None,
                                      headers={"content-type":
                                               "application/x-www-form-urlencoded"})
    else:
        r = await service.client.post(path, files={"List-Unsubscribe": (None, "One-Click")},
                                      auth=None)
    assert r.status_code == 200
    assert "location" not in r.headers
    (event,) = await service.events(event="unsubscribed")
    assert event["recipient"] == "alice@example.org"
    assert event["unsubscribe-scope"] == ["*"]
    with service.runtime.db.read() as conn:
        rows = conn.execute(sa.select(suppressions)).all()
    assert [(r.kind, r.address, r.tag) for r in rows] == [
        ("unsubscribe", "alice@example.org", "*")]
    # Every later message to the address is dropped, whatever its tags.
    await service.send(to="alice@example.org", subject="again", text="x",
                       **{"o:tag": "other"})
    (failed,) = await service.wait_events(1, event="failed")
    assert failed["reason"] == "suppress-unsubscribe"
    assert failed["severity"] == "permanent"
    await asyncio.sleep(0.2)
    assert len(smtp_relay.received) == 1


async def test_post_without_one_click_body_is_refused(service: Service,
                                                      smtp_relay: SmtpRelay) -> None:
    received = await _one(service, smtp_relay, text="hi")
    path = _links(received.message["List-Unsubscribe"])[0].split("8080", 1)[1]
    r = await service.client.post(path, content=b"something=else", auth=None,
                                  headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400
    r = await service.client.post(path[:-4] + "aaaa", content=b"List-Unsubscribe=One-Click",
                                  auth=None,
                                  headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 404
    assert await service.events(event="unsubscribed") == []


async def test_placeholders_and_tag_scope(service: Service, smtp_relay: SmtpRelay) -> None:
    html = ('<html><body><a href="%tag_unsubscribe_url%">leave this list</a> '
            '<a href="%unsubscribe_url%">leave all</a> write to %unsubscribe_email%'
            '</body></html>')
    received = await _one(service, smtp_relay, html=html, text="Leave: %unsubscribe_url%",
                          **{"o:tag": "promo"})
    body = received.part("text/html")
    assert "%" not in re.sub(r"%[0-9A-F]{2}", "", body.split("<img")[0])
    tag_url, all_url = re.findall(r'href="(http://[^"]+/u/[a-z2-7]+)"', body)
    assert re.search(r"unsub\+[a-z2-7]+@example\.com", body)
    assert re.search(r"Leave: http://[^ ]+/u/[a-z2-7]+", received.part("text/plain"))
    r = await service.client.post(tag_url.split("8080", 1)[1], auth=None,
                                  data={"List-Unsubscribe": "One-Click"})
    assert r.status_code == 200
    (event,) = await service.events(event="unsubscribed")
    assert event["unsubscribe-scope"] == ["promo"]
    await service.send(to="alice@example.org", subject="x", text="x", **{"o:tag": "promo"})
    await service.send(to="alice@example.org", subject="y", text="y", **{"o:tag": "news"})
    (failed,) = await service.wait_events(1, event="failed")
    assert failed["tags"] == ["promo"] and failed["reason"] == "suppress-unsubscribe"
    delivered = await service.wait_events(2, event="delivered")
    assert {e["tags"][0] for e in delivered} == {"promo", "news"}  # first promo, then news


async def test_footer_when_no_placeholder(service: Service, smtp_relay: SmtpRelay) -> None:
    r = await service.client.put("/v3/domains/example.com/tracking/unsubscribe",
                                 data={"active": "yes",
                                       "html_footer": '<p><a href="%unsubscribe_url%">Bye</a></p>',
                                       "text_footer": "\nBye: %unsubscribe_url%"})
    assert r.status_code == 200 and r.json()["unsubscribe"]["active"] is True
    received = await _one(service, smtp_relay, html="<html><body><p>Hi</p></body></html>",
                          text="Hi")
    html = received.part("text/html")
    assert re.search(r'<p>Hi</p><p><a href="http://[^"]+/u/[a-z2-7]+">Bye</a></p><img', html)
    assert re.search(r"Hi\s+Bye: http://\S+/u/[a-z2-7]+", received.part("text/plain"))
    # With a placeholder of its own, the message gets no footer.
    received = await _one(service, smtp_relay, html='<a href="%unsubscribe_url%">x</a>')
    assert "Bye" not in received.part("text/html")


async def test_mailto_unsubscribe_by_smtp(service_factory: Any, smtp_relay: SmtpRelay) -> None:
    port = free_port()
    async with service_factory(relay=smtp_relay.url, smtp=f"127.0.0.1:{port}") as svc:
        await svc.add_domain("example.com")
        received = await _one(svc, smtp_relay, text="hi")
        _, mailto = _links(received.message["List-Unsubscribe"])
        note = EmailMessage()
        note["From"] = "alice@example.org"
        note["To"] = mailto
        note["Subject"] = "unsubscribe"
        note.set_content("")

        def send() -> None:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                client.send_message(note)  # no AUTH: returning mail to a bounce domain

        await asyncio.to_thread(send)
        (event,) = await svc.wait_events(1, event="unsubscribed")
        assert event["recipient"] == "alice@example.org"
        assert event["method"] == "MAIL"

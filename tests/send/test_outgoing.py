"""The one outgoing-message value: checked once when made, the same way whichever door
the message came in by (the form send, messages.mime, SMTP submission)."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator, Callable
from email import message_from_bytes
from email.policy import default
from typing import Any

import pytest
import sqlalchemy as sa

from mailbeacon.errors import BadRequest
from mailbeacon.send.mime import from_mime
from mailbeacon.send.options import DeliveryOptions
from mailbeacon.send.outgoing import MAX_RECIPIENTS, OutgoingMessage
from mailbeacon.send.submission import Submission
from mailbeacon.storage.schema import deliveries, messages
from tests.support import API_KEY, Service, SmtpRelay, free_port

TOO_MANY = f"Too many recipients: at most {MAX_RECIPIENTS} per message"
RAW = (b"From: Shop <shop@example.com>\r\nTo: list@example.org\r\nSubject: Hi\r\n"
       b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nHello\r\n")


def value(recipients: list[str], **fields: Any) -> OutgoingMessage:
    return OutgoingMessage(b"", "1@example.com", fields.pop("sender", "shop@example.com"),
                           tuple(recipients), {"subject": fields.pop("subject", "Hi")},
                           **fields)


def test_the_value_counts_each_recipient_once() -> None:
    addresses = [f"user{i}@example.org" for i in range(MAX_RECIPIENTS)]
    made = value([*addresses, "USER0@example.org"], tags=("Sale", "sale ", "new"))
    assert made.recipients == tuple(addresses)  # the first spelling, in order
    assert made.tags == ("sale", "new")
    with pytest.raises(BadRequest, match=TOO_MANY):
        value([*addresses, "one.more@example.org"])


@pytest.mark.parametrize(("fields", "words"), [
    ({"recipients": []}, "'to' parameter is missing"),
    ({"tags": ("a/b",)}, "must not contain '|' or '/'"),
    ({"sender": "nobody"}, "no usable From address"),
    ({"subject": "Hi %recipient.name%",
      "delivery": DeliveryOptions(recipient_variables={"a@example.org": {"name": "x\ny"}})},
     "'recipient-variables' (in the subject)"),
])
def test_the_value_refuses(fields: dict[str, Any], words: str) -> None:
    recipients = fields.pop("recipients", ["a@example.org"])
    with pytest.raises(BadRequest, match=words.replace("(", r"\(").replace(")", r"\)")):
        value(recipients, **fields)


@pytest.mark.parametrize(("sender", "subject", "headers"), [
    (("Shop", "shop@example.com"), "Hello", []),
    (("Ünïcode, Inc.", "shop@example.com"), "=?utf-8?q?caf=C3=A9?= and more", []),
    (("", "shop@example.com"), "Weekly", [("List-Id", "Weekly News <Weekly.Example.COM>")]),
])
def test_the_form_summary_is_what_the_message_says(sender: tuple[str, str], subject: str,
                                                  headers: list[tuple[str, str]]) -> None:
    """The headers events show are those a reader of the stored MIME finds, whichever
    builder made the value."""
    sub = Submission(sender=sender, to=[("Al", "al@example.org"), ("", "b@example.org")],
                     subject=subject, text="hi", headers=headers)
    made = sub.outgoing("example.com")
    parsed = message_from_bytes(made.mime, policy=default)
    expected = {"message-id": made.message_id, **{
        name: str(parsed[name]) for name in ("from", "to", "subject")}}
    if headers:
        expected["list-id"] = "weekly.example.com"
    assert dict(made.headers) == expected
    raw = from_mime(made.mime, "example.com", ["al@example.org"])
    assert dict(raw.headers) == expected  # and the same from the raw MIME


def test_raw_mime_is_checked_by_the_same_value() -> None:
    many = [f"u{i}@example.org" for i in range(MAX_RECIPIENTS + 1)]
    with pytest.raises(BadRequest, match=TOO_MANY):
        from_mime(RAW, "example.com", many)
    with pytest.raises(BadRequest, match="no usable From address"):
        from_mime(RAW.replace(b"From: Shop <shop@example.com>\r\n", b""), "example.com",
                  ["a@example.org"])


async def test_too_many_recipients_refused_alike_by_both_api_sends(service: Service) -> None:
    to = ", ".join(f"user{i}@example.org" for i in range(MAX_RECIPIENTS + 1))
    form = await service.client.post("/v3/example.com/messages", data={
        "from": "shop@example.com", "to": to, "subject": "x", "text": "y"})
    mime = await service.client.post("/v3/example.com/messages.mime", data={"to": to},
                                     files={"message": ("m.eml", RAW, "message/rfc822")})
    assert (form.status_code, form.json()) == (400, {"message": TOO_MANY})
    assert (mime.status_code, mime.json()) == (400, {"message": TOO_MANY})
    with service.runtime.db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(messages)).scalar() == 0


@pytest.fixture
async def smtp_service(service_factory: Callable[..., Any],
                       smtp_relay: SmtpRelay) -> AsyncIterator[tuple[Service, int]]:
    port = free_port()
    async with service_factory(relay=smtp_relay.url, smtp=f"127.0.0.1:{port}") as svc:
        await svc.add_domain("example.com")
        yield svc, port


def _submit(port: int, raw: bytes, to: list[str]) -> dict[str, tuple[int, bytes]]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.login("api", API_KEY)
        return client.sendmail("shop@example.com", to, raw)


@pytest.mark.parametrize(("header", "words"), [
    (b"X-Mailgun-Tag: a/b", "Tag 'a/b' must not contain '|' or '/'"),
    (b'X-Mailgun-Recipient-Variables: {"a@example.org": {"n": "x\\ny"}}',
     "'recipient-variables' (in the subject)"),
])
async def test_smtp_and_messages_mime_refuse_in_the_same_words(
        smtp_service: tuple[Service, int], header: bytes, words: str) -> None:
    service, port = smtp_service
    raw = RAW.replace(b"Subject: Hi", b"Subject: Hi %recipient.n%")
    raw = raw.replace(b"MIME-Version", header + b"\r\nMIME-Version")
    api = await service.client.post("/v3/example.com/messages.mime",
                                    data={"to": "a@example.org"},
                                    files={"message": ("m.eml", raw, "message/rfc822")})
    assert api.status_code == 400
    message = api.json()["message"]
    assert message.startswith(words)
    with pytest.raises(smtplib.SMTPDataError) as refused:
        await asyncio.to_thread(_submit, port, raw, ["a@example.org"])
    assert refused.value.smtp_code == 550
    assert refused.value.smtp_error == f"5.6.0 {message}".encode()


async def test_smtp_takes_at_most_max_recipients_per_transaction(
        smtp_service: tuple[Service, int], smtp_relay: SmtpRelay) -> None:
    """The same limit, told at RCPT (RFC 5321: the client sends the rest in another
    transaction); the message goes to the ones taken."""
    service, port = smtp_service
    to = [f"user{i}@example.org" for i in range(MAX_RECIPIENTS + 1)]
    raw = RAW.replace(b"MIME-Version", b"X-Mailgun-Drop-Message: yes\r\nMIME-Version")
    refused = await asyncio.to_thread(_submit, port, raw, to)
    assert list(refused) == [to[-1]] and refused[to[-1]][0] == 452
    with service.runtime.db.read() as conn:
        stored = conn.execute(sa.select(deliveries.c.recipient)).scalars().all()
    assert sorted(stored) == sorted(to[:-1])

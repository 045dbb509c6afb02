"""Header injection, over the API and SMTP submission, as the relay sees it.

Property: whatever a sender puts in a header entry point (subject, From display name,
h: or a custom header, attachment file name, a recipient variable used in the subject),
given directly or as RFC 2047 encoded words (Q and B), it is either refused with a
clear error naming the field (HTTP 400, SMTP 550 5.6.0), or relayed with exactly the
header fields meant and no control character in any decoded value. Python 3.11.7's
email package writes a decoded CR LF of an encoded word as a real line break
(CVE-2024-6923), so without the checks these tests find injected headers.
More examples: MAILBEACON_FUZZ_EXAMPLES=200.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import smtplib
import threading
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailbeacon.send.headers import CONTROL
from tests.support import API_KEY, Received, Service, SmtpRelay, free_port

T = TypeVar("T")
EXAMPLES = int(os.environ.get("MAILBEACON_FUZZ_EXAMPLES", "20"))
# Characters that break header lines somewhere (CR, LF, NUL, what str.splitlines takes
# for a line break, Unicode separators), text that looks like headers, and ordinary text.
PIECES = st.sampled_from([
    "a", "Hi", " ", "\t", "é", "用户", "\r\n", "\r", "\n", "\x00", "\x0b", "\x0c", "\x1c",
    "\x1e", "\x7f", "\x85", "\u2028", "\u2029", "X-Injected: 1", "Reply-To: evil@evil.test",
    "Content-Type: text/html", ":", "?=", "=?", '"', "<", ">", ",", ";", "@", "\\",
])
TEXT = st.lists(PIECES, min_size=1, max_size=8).map("".join)


def q_word(text: str) -> str:
    """RFC 2047 Q encoding of every byte that is not a letter or digit."""
    return "=?utf-8?q?" + "".join(
        chr(b) if chr(b).isascii() and chr(b).isalnum() else "_" if b == 32 else f"={b:02X}"
        for b in text.encode()) + "?="


def b_word(text: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(text.encode()).decode() + "?="


ENCODINGS = {"q": q_word, "b": b_word, "plain": lambda text: text}
VALUES = st.tuples(TEXT, st.sampled_from(sorted(ENCODINGS))).map(
    lambda t: ENCODINGS[t[1]](t[0]))
ENTRY_POINTS = ["subject", "from-name", "header", "filename", "recipient-variable"]
# What mailbeacon adds to every relayed message.
OURS = {"list-unsubscribe", "list-unsubscribe-post", "x-mailbeacon-delivery"}
PART_HEADERS = {"content-type", "content-transfer-encoding", "content-disposition",
                "mime-version"}


@dataclass
class Live:
    """A mailbeacon (API and SMTP submission) in its own event loop thread, so that a
    synchronous hypothesis test can drive it example after example."""

    service: Service
    smtp_port: int
    relay: SmtpRelay
    run: Callable[[Coroutine[Any, Any, Any]], Any]

    def relayed(self, before: int) -> Received:
        return self.run(self.relay.wait_for(before + 1))[before]  # type: ignore[no-any-return]


@pytest.fixture
def live(service_factory: Callable[..., Any], smtp_relay: SmtpRelay) -> Iterator[Live]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(60)

    port = free_port()
    context = service_factory(relay=smtp_relay.url, smtp=f"127.0.0.1:{port}")
    service = run(context.__aenter__())
    try:
        run(service.add_domain("example.com"))
        yield Live(service, port, smtp_relay, run)
    finally:
        run(context.__aexit__(None, None, None))
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def assert_headers_as_meant(received: Received, top: set[str]) -> None:
    """The relayed message has exactly the top-level fields `top` (each once), MIME
    parts only MIME fields, and no decoded value holds a control character."""
    msg = received.message
    names = Counter(name.lower() for name in msg)
    assert set(names) == top and max(names.values()) == 1, names
    for part in msg.walk():
        if part is not msg:
            assert {name.lower() for name in part} <= PART_HEADERS, part.keys()
        for name, value in part.items():
            assert not CONTROL.search(str(value)), (name, value)
            for param in (part.get_params(header=name) or []) if name.lower().startswith(
                    "content-") else []:
                assert not CONTROL.search(str(param[1])), (name, param)


def api_request(entry: str, value: str) -> tuple[dict[str, Any], Any, set[str], str]:
    """Form fields, files, the header names meant, and the field an error must name."""
    data: dict[str, Any] = {"from": "Shop <shop@example.com>", "to": "alice@example.org",
                            "subject": "Hello", "text": "body"}
    files = None
    top = {"from", "to", "subject", "date", "message-id", "mime-version", "content-type",
           "content-transfer-encoding"} | OURS
    field = {"subject": "'subject'", "from-name": "'from'", "header": "'h:X-Custom'",
             "filename": "attachment file name",
             "recipient-variable": "'recipient-variables'"}[entry]
    if entry == "subject":
        data["subject"] = value
    elif entry == "from-name":
        data["from"] = f'"{value}" <shop@example.com>'
    elif entry == "header":
        data["h:X-Custom"] = value
        top.add("x-custom")
    elif entry == "filename":
        files = {"attachment": (value, b"attached", "text/plain")}
        top.discard("content-transfer-encoding")  # multipart/mixed now
    else:
        data["subject"] = "Hello %recipient.n%"
        data["recipient-variables"] = json.dumps({"alice@example.org": {"n": value}})
    return data, files, top, field


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(entry=st.sampled_from(ENTRY_POINTS), value=VALUES)
def test_api_header_entry_points(live: Live, entry: str, value: str) -> None:
    data, files, top, field = api_request(entry, value)
    before = len(live.relay.received)
    r = live.run(live.service.client.post("/v3/example.com/messages", data=data, files=files))
    if r.status_code == 400:
        message = r.json()["message"]
        assert field in message, message
        if entry == "recipient-variable":
            assert "alice@example.org" in message
        return
    assert r.status_code == 200, r.text
    assert_headers_as_meant(live.relayed(before), top)


def smtp_message(entry: str, value: str) -> tuple[bytes, set[str]]:
    """A raw submission (encoded words go in as they are) and the header names meant."""
    head = {"From": "Shop <shop@example.com>", "To": "alice@example.org",
            "Subject": "Hello", "MIME-Version": "1.0"}
    body = "Content-Type: text/plain; charset=utf-8\r\n\r\nbody\r\n"
    if entry == "subject":
        head["Subject"] = value
    elif entry == "from-name":
        head["From"] = f'"{value}" <shop@example.com>'
    elif entry == "header":
        head["X-Custom"] = value
    elif entry == "filename":
        body = ('Content-Type: multipart/mixed; boundary="b0"\r\n\r\n--b0\r\n'
                "Content-Type: text/plain\r\n\r\nbody\r\n--b0\r\n"
                "Content-Type: application/octet-stream\r\n"
                f'Content-Disposition: attachment; filename="{value}"\r\n\r\n'
                "attached\r\n--b0--\r\n")
    else:
        head["Subject"] = "Hello %recipient.n%"
        head["X-Mailgun-Recipient-Variables"] = json.dumps({"alice@example.org": {"n": value}})
    top = {name.lower() for name in head if not name.startswith("X-Mailgun")}
    top |= {"content-type", "message-id", "date"} | OURS
    if entry != "filename":  # the text part is the message: its encoding is set anew
        top.add("content-transfer-encoding")
    raw = "".join(f"{name}: {v}\r\n" for name, v in head.items()) + body
    return raw.encode(), top


def submit(port: int, raw: bytes) -> str | None:
    """None when queued, else the SMTP reply that refused the message."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.login("api", API_KEY)
        try:
            client.sendmail("shop@example.com", ["alice@example.org"], raw)
        except smtplib.SMTPDataError as exc:
            error = exc.smtp_error
            return f"{exc.smtp_code} {error.decode() if isinstance(error, bytes) else error}"
    return None


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(entry=st.sampled_from(ENTRY_POINTS), text=TEXT,
       encoding=st.sampled_from(sorted(ENCODINGS)))
def test_smtp_header_entry_points(live: Live, entry: str, text: str, encoding: str) -> None:
    if encoding == "plain":  # a raw line break would only end the header line itself
        text = text.replace("\r", "").replace("\n", "")
    raw, top = smtp_message(entry, ENCODINGS[encoding](text))
    before = len(live.relay.received)
    refused = submit(live.smtp_port, raw)
    if refused is not None:
        assert refused.startswith("550 5.6.0 "), refused
        return
    assert_headers_as_meant(live.relayed(before), top)


# --- the findings of issue 19, one by one ---------------------------------------------

CVE_SUBJECT = "=?utf-8?q?Hi=0D=0AReply-To:_attacker@evil.test=0D=0AX-Injected:_1?="


@pytest.mark.parametrize("fields, named", [
    ({"subject": CVE_SUBJECT}, "'subject' parameter"),
    ({"subject": "a\x0cb"}, "'subject' parameter"),
    ({"subject": "a\u2028b"}, "'subject' parameter"),
    ({"h:X-Custom": "a\x0bb"}, "'h:X-Custom'"),
    ({"h:X-Custom": "=?utf-8?b?" + base64.b64encode(b"x\r\nBcc: a@evil.test").decode()
      + "?="}, "'h:X-Custom'"),
    ({"from": '"=?utf-8?q?E=0D=0AX:_y?=" <shop@example.com>'}, "'from' parameter"),
    ({"to": '"=?utf-8?q?A=0D=0AX:_y?=" <alice@example.org>'}, "'to' parameter"),
    ({"subject": "Hello %recipient.n%",
      "recipient-variables": json.dumps({"alice@example.org": {"n": "x\r\ny"}})},
     "for alice@example.org"),
    ({"subject": "Hello %recipient.n%",
      "recipient-variables": json.dumps({"alice@example.org": {"n": CVE_SUBJECT}})},
     "for alice@example.org"),
])
async def test_hostile_values_are_a_400_naming_the_field(
        service: Service, smtp_relay: SmtpRelay, fields: dict[str, str], named: str) -> None:
    data = {"from": "shop@example.com", "to": "alice@example.org", "subject": "s",
            "text": "t", **fields}
    r = await service.client.post("/v3/example.com/messages", data=data)
    assert r.status_code == 400, r.text
    assert named in r.json()["message"]
    assert await service.events() == []


@pytest.mark.parametrize("name", ["DKIM-Signature", "Content-Type", "content-transfer-encoding",
                                  "MIME-Version", "ARC-Seal", "ARC-Authentication-Results",
                                  "Received", "Return-Path", "Authentication-Results",
                                  "List-Unsubscribe", "List-Unsubscribe-Post"])
async def test_h_cannot_set_owned_headers(service: Service, name: str) -> None:
    r = await service.client.post("/v3/example.com/messages", data={
        "from": "shop@example.com", "to": "alice@example.org", "text": "t",
        f"h:{name}": "text/html"})
    assert r.status_code == 400, r.text
    assert f"'h:{name}' cannot be set" in r.json()["message"]


async def test_attachment_file_names_lose_paths_and_controls(
        service: Service, smtp_relay: SmtpRelay) -> None:
    # Written by hand: HTTP clients percent-encode control characters in file names.
    body = b"".join(
        b'--B\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n' % (k, v)
        for k, v in ((b"from", b"shop@example.com"), (b"to", b"alice@example.org"),
                     (b"text", b"t"))) + b"".join(
        b'--B\r\nContent-Disposition: form-data; name="attachment"; filename="%s"\r\n'
        b"Content-Type: text/plain\r\n\r\n1\r\n" % name
        for name in (b"../../etc/pass\x0bwd",
                     b"C:\\temp\\=?utf-8?q?a=0D=0AX-Injected:_1?=.txt")) + b"--B--\r\n"
    r = await service.client.post("/v3/example.com/messages", content=body,
                                  headers={"Content-Type": "multipart/form-data; boundary=B"})
    assert r.status_code == 200, r.text
    (received,) = await smtp_relay.wait_for(1)
    names = [part.get_filename() for part in received.message.iter_attachments()]
    assert names == ["passwd", "aX-Injected: 1.txt"]
    assert "X-Injected" not in received.message


def _nested(depth: int) -> bytes:
    head = b"From: shop@example.com\r\nTo: alice@example.org\r\nSubject: deep\r\n"
    parts = [b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
             for i in range(depth)]
    ends = [b"\r\n--b%d--\r\n" % i for i in reversed(range(depth))]
    return head + b"".join(parts) + b"Content-Type: text/plain\r\n\r\nx" + b"".join(ends)


@pytest.mark.parametrize("raw, named", [
    (_nested(51), "deeper than 50"),
    (_nested(246), "deeper than 50"),
    (_nested(3000), "deeper than 50"),
    (b"From: shop@example.com\r\nSubject: x\r\nContent-Type: text/plain; charset=x-nope"
     b"\r\n\r\nbody\r\n", "unknown charset 'x-nope'"),
    (b"From: shop@example.com\r\nSubject: " + CVE_SUBJECT.encode() + b"\r\n\r\nbody\r\n",
     "header 'Subject'"),
    (b"From: shop@example.com\r\nSubject: x\r\nContent-Type: multipart/mixed; boundary=b"
     b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b\r\nContent-Type: "
     b"application/pdf\r\nContent-Disposition: attachment; filename*=utf-8''a%0D%0AX%3A%201"
     b"\r\n\r\nx\r\n--b--\r\n", "header 'Content-Disposition' of MIME part 2"),
])
async def test_messages_mime_refuses_clearly(service: Service, smtp_relay: SmtpRelay,
                                             raw: bytes, named: str) -> None:
    r = await service.client.post("/v3/example.com/messages.mime",
                                  data={"to": "alice@example.org"},
                                  files={"message": ("m.eml", raw, "message/rfc822")})
    assert r.status_code == 400, r.text
    assert named in r.json()["message"]


async def test_messages_mime_within_the_depth_limit_is_delivered(
        service: Service, smtp_relay: SmtpRelay) -> None:
    r = await service.client.post("/v3/example.com/messages.mime",
                                  data={"to": "alice@example.org"},
                                  files={"message": ("m.eml", _nested(20), "message/rfc822")})
    assert r.status_code == 200, r.text
    (received,) = await smtp_relay.wait_for(1)
    assert received.message["Subject"] == "deep"


async def test_submitted_trust_headers_are_dropped(service: Service,
                                                   smtp_relay: SmtpRelay) -> None:
    raw = (b"Received: from app.example.com by mx\r\n"
           b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=old; b=forged\r\n"
           b"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=evil.test; s=x; b=y\r\n"
           b"Authentication-Results: mx.example.net; dkim=pass\r\n"
           b"Return-Path: <someone@evil.test>\r\n"
           b"From: shop@example.com\r\nTo: alice@example.org\r\nSubject: x\r\n\r\nbody\r\n")
    r = await service.client.post("/v3/example.com/messages.mime",
                                  data={"to": "alice@example.org"},
                                  files={"message": ("m.eml", raw, "message/rfc822")})
    assert r.status_code == 200, r.text
    (received,) = await smtp_relay.wait_for(1)
    names = {name.lower() for name in received.message}
    assert "received" in names  # trace fields stay, as every relay keeps them
    assert not names & {"dkim-signature", "arc-seal", "authentication-results", "return-path"}


async def test_smtp_submission_refuses_with_550(service_factory: Callable[..., Any],
                                                smtp_relay: SmtpRelay) -> None:
    port = free_port()
    async with service_factory(relay=smtp_relay.url, smtp=f"127.0.0.1:{port}") as svc:
        await svc.add_domain("example.com")
        raw = (b"From: shop@example.com\r\nTo: alice@example.org\r\nSubject: "
               + CVE_SUBJECT.encode() + b"\r\n\r\nbody\r\n")
        reply = await asyncio.to_thread(submit, port, raw)
        assert reply is not None and reply.startswith("550 5.6.0 header 'Subject'"), reply
        reply = await asyncio.to_thread(submit, port, _nested(300))
        assert reply is not None and reply.startswith("550 5.6.0 ") and "50" in reply, reply
        assert await svc.events() == []


# --- international addresses ----------------------------------------------------------


@pytest.fixture
def relay_without_smtputf8() -> Iterator[SmtpRelay]:
    from aiosmtpd.controller import Controller

    relay = SmtpRelay(free_port())
    controller = Controller(relay, hostname="127.0.0.1", port=relay.port,
                            enable_SMTPUTF8=False)
    controller.start()
    yield relay
    controller.stop()


async def test_international_address_over_smtputf8(service: Service,
                                                   smtp_relay: SmtpRelay) -> None:
    await service.send(to="Jöhn <用户@例子.广告>", subject="Grüße", text="hi")
    (received,) = await smtp_relay.wait_for(1)
    assert received.recipients == ["用户@xn--fsqu00a.xn--4rr70v"]  # IDNA domain
    head = received.data.split(b"\r\n\r\n")[0].decode("utf-8")  # RFC 6532: UTF-8
    assert "\r\nTo: J=?utf-8?q?=C3=B6?=hn <用户@xn--fsqu00a.xn--4rr70v>\r\n" in head \
        or "\r\nTo: Jöhn <用户@xn--fsqu00a.xn--4rr70v>\r\n" in head, head
    (event,) = await service.wait_events(1, event="delivered")
    assert event["recipient"] == "用户@例子.广告"


async def test_international_domain_needs_no_smtputf8(
        service_factory: Callable[..., Any], relay_without_smtputf8: SmtpRelay) -> None:
    async with service_factory(relay=relay_without_smtputf8.url) as svc:
        await svc.add_domain("example.com")
        await svc.send(to="bob@例子.广告, 用户@例子.广告", subject="s", text="hi")
        (received,) = await relay_without_smtputf8.wait_for(1)
        assert received.recipients == ["bob@xn--fsqu00a.xn--4rr70v"]
        (failed,) = await svc.wait_events(1, event="failed")
        assert failed["recipient"] == "用户@例子.广告"
        assert failed["severity"] == "permanent"
        status = failed["delivery-status"]
        assert status["code"] == 553 and "SMTPUTF8" in status["message"]
        await asyncio.sleep(0.3)
        assert len(relay_without_smtputf8.received) == 1


def test_python_email_package_is_the_vulnerable_one() -> None:
    """Why the checks matter here: this Python writes a decoded CR LF as a line break
    (fixed in 3.11.10 / 3.12.5). If this fails, Python was upgraded; the checks stay."""
    import sys
    from email.policy import SMTP

    msg = EmailMessage(policy=SMTP)
    msg["Subject"] = CVE_SUBJECT
    try:
        data = msg.as_bytes()
    except Exception:  # noqa: BLE001 - a fixed Python refuses to write it
        pytest.skip(f"Python {sys.version.split()[0]} refuses it by itself")
    assert b"\r\nX-Injected: 1" in data

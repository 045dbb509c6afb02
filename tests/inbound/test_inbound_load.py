"""Hostile returning mail does not take the server (issue 19.5): parsing is bounded and
runs off the event loop, so the API keeps answering while big "bounces" come in."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from mailbeacon.inbound.message import MAX_PARSED_BYTES, trim_parts
from mailbeacon.inbound.parser import Kind, parse
from tests.support import API_KEY, SmtpRelay, free_port

# Sends one hostile message to the door: argv port, maker (a function of this module).
SEND = """
import smtplib, sys
from tests.inbound import test_inbound_load
data = getattr(test_inbound_load, sys.argv[2])()
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=120) as client:
    client.ehlo()
    client.mail("")
    client.rcpt("postmaster@example.com")
    code, reply = client.data(data)
print(code, reply.decode())
"""

LIVENESS_SECONDS = 1.0  # a wide bound for a loaded machine, not a speed figure


def hostile_bounce(size: int = 5_400_000) -> bytes:
    """A 'bounce' of about `size` bytes: one base64 HTML part of '<' that the text scans
    would chew on, then a DSN part after it."""
    body = base64.encodebytes(b"<" * (size * 3 // 4)).replace(b"\n", b"\r\n")
    return (b"From: MAILER-DAEMON@mx.example.net\r\nTo: postmaster@example.com\r\n"
            b"Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/report; report-type=delivery-status; boundary="H"\r\n'
            b"\r\n--H\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + body + b"--H\r\nContent-Type: message/delivery-status\r\n\r\n"
            b"Reporting-MTA: dns; mx.example.net\r\n\r\nFinal-Recipient: rfc822; a@example.org"
            b"\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n--H--\r\n")


def many_parts(size: int = 5_400_000) -> bytes:
    """A 'bounce' of about `size` bytes in tiny MIME parts: the email package takes
    seconds over it whole."""
    part = b"--P\r\nContent-Type: text/plain\r\n\r\nx\r\n"
    return (b"From: MAILER-DAEMON@mx.example.net\r\nTo: postmaster@example.com\r\n"
            b"Subject: Undelivered\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="P"\r\n\r\n'
            + part * (size // len(part)) + b"--P--\r\n")


def test_trimming_keeps_the_structure_and_what_follows_a_huge_part() -> None:
    raw = hostile_bounce(3_000_000)
    trimmed = trim_parts(raw)
    assert len(trimmed) < 100_000 <= MAX_PARSED_BYTES
    assert b"Final-Recipient: rfc822; a@example.org" in trimmed and trimmed.endswith(b"--H--\r\n")
    (result,) = parse(raw)
    assert result.kind is Kind.BOUNCE and result.recipient == "a@example.org"
    assert result.status == "5.1.1"


def test_an_attached_message_keeps_its_headers_after_a_huge_part() -> None:
    junk = base64.encodebytes(os.urandom(500_000))
    raw = (b"From: MAILER-DAEMON@x\nTo: fbl@example.com\nMIME-Version: 1.0\n"
           b'Content-Type: multipart/mixed; boundary="O"\n\n--O\nContent-Type: text/plain\n\n'
           b"Delivery to the following recipient failed permanently: b@example.org\n"
           b"550 5.1.1 user unknown\n--O\nContent-Type: application/octet-stream\n"
           b"Content-Transfer-Encoding: base64\n\n" + junk
           + b"--O\nContent-Type: message/rfc822\n\nMessage-ID: <kept@example.com>\n"
           b"To: b@example.org\n\n" + b"x" * 200_000 + b"\n--O--\n")
    trimmed = trim_parts(raw)
    assert len(trimmed) < 200_000 and b"Message-ID: <kept@example.com>" in trimmed
    (result,) = parse(raw)
    assert result.original_message_id == "kept@example.com"


async def test_the_api_answers_while_big_bounces_are_processed(
        service_factory: Callable[..., Any], smtp_relay: SmtpRelay) -> None:
    port = free_port()
    async with service_factory(relay=smtp_relay.url, smtp=f"127.0.0.1:{port}",
                               smtp_max_bytes=40 * 1024 * 1024) as service:
        await service.add_domain("example.com")
        await service.start_http()
        for _ in range(3):  # warm: the first requests open connections and fill caches
            assert (await service.web.get("/v3/domains", auth=("api", API_KEY))).is_success
        # From another process, as a remote server sends it, so that only the server's
        # own work competes with its event loop.
        for maker in ("many_parts", "hostile_bounce"):
            sender = await asyncio.create_subprocess_exec(
                sys.executable, "-c", SEND, str(port), maker,
                stdout=asyncio.subprocess.PIPE)
            wait = asyncio.create_task(sender.communicate())
            slowest, answered = 0.0, 0
            while not wait.done() or answered < 3:
                started = time.monotonic()
                r = await service.web.get("/v3/domains", auth=("api", API_KEY))
                slowest = max(slowest, time.monotonic() - started)
                assert r.status_code == 200
                answered += 1
                await asyncio.sleep(0.05)
            out, _ = wait.result()
            assert out.startswith(b"250"), out
            assert slowest < LIVENESS_SECONDS, f"the API stalled {slowest:.2f} s ({maker})"


def test_huge_headers_are_cut_and_the_body_still_found() -> None:
    raw = (b"From: MAILER-DAEMON@mx.example.net\r\nX-Junk: " + b"j" * 3_000_000 + b"\r\n"
           + b"".join(b"X-H%d: v\r\n" % i for i in range(20_000))
           + b"Subject: Undelivered\r\n\r\n"
           b"Delivery to the following recipient failed permanently:\r\n\r\n"
           b"    c@example.org\r\n\r\n550 5.1.1 The email account does not exist.\r\n")
    trimmed = trim_parts(raw)
    assert len(trimmed) < 150_000 and b"c@example.org" in trimmed
    (result,) = parse(raw)
    assert result.kind is Kind.BOUNCE and result.recipient == "c@example.org"


@given(st.binary(max_size=4096))
@settings(max_examples=300, deadline=None)
def test_small_messages_pass_through_untouched(raw: bytes) -> None:
    assert trim_parts(raw) == raw


@given(st.lists(st.sampled_from([b"--B\r\n", b"--B--\r\n", b"\r\n", b"x" * 3000 + b"\r\n",
                                 b"Content-Type: multipart/mixed; boundary=B\r\n",
                                 b"Content-Type: message/rfc822\r\n", b"y: z\r\n"]),
                max_size=400))
@settings(max_examples=200, deadline=None)
def test_trimmed_output_is_bounded(lines: list[bytes]) -> None:
    raw = b"".join(lines)
    out = trim_parts(raw, part_limit=4096, total_limit=64 * 1024)
    assert len(out) <= 64 * 1024 + 3002 and len(out) <= len(raw)

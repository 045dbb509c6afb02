"""Forged reports change nothing; reports tied to a real delivery act (DESIGN 7, issue 18.1).

Every report goes over a real SMTP socket to mailbeacon's door, unauthenticated, as
anyone on the internet could send it. Two domains: reports are addressed to example.com;
other.example sent to `innocent@example.net`, whom the forgeries target.
"""

from __future__ import annotations

import asyncio
import json
import re
import smtplib
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from mailbeacon.storage.schema import inbound_messages, suppressions
from tests.support import Received, Service, SmtpRelay

VICTIM = "innocent@example.net"
EFFECT_EVENTS = ("failed", "complained", "unsubscribed", "replied")


async def _deliver(service: Service, relay: SmtpRelay, to: str,
                   domain: str = "example.com") -> Received:
    before = len(relay.received)
    await service.send(domain, to=to, subject="Newsletter", text="hello",
                       **{"from": f"news@{domain}"})
    received = await relay.wait_for(before + 1)
    return received[before]


def _smtp(port: int, data: bytes, rcpt: str, sender: str = "") -> tuple[int, bytes]:
    data = re.sub(rb"\r?\n", b"\r\n", data)
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo()
        client.mail(sender)
        code, reply = client.rcpt(rcpt)
        assert code == 250, reply
        return client.data(data)


def _headers_of(original: bytes) -> bytes:
    return original.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0] + b"\n"


# --- the reports, each built around a returned original (or its Message-ID) ---------------


def dsn(recipient: str, original: bytes) -> bytes:
    return b"""From: MAILER-DAEMON@mx.example.net
To: postmaster@example.com
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B1"

--B1
Content-Type: text/plain

Your message could not be delivered.

--B1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; %s
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <%s>: Recipient address rejected: User unknown

--B1
Content-Type: text/rfc822-headers

%s
--B1--
""" % (recipient.encode(), recipient.encode(), _headers_of(original))


def arf(recipient: str, original: bytes, feedback_type: str) -> bytes:
    return b"""From: feedback@fbl.example.net
To: fbl@example.com
Subject: FW: Newsletter
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="B2"

--B2
Content-Type: text/plain

This is an email abuse report.

--B2
Content-Type: message/feedback-report

Feedback-Type: %s
User-Agent: ExampleFBL/1.0
Version: 1
Original-Rcpt-To: %s

--B2
Content-Type: message/rfc822

%s
--B2--
""" % (feedback_type.encode(), recipient.encode(), original.replace(b"\r\n", b"\n"))


def ses(recipient: str, original: bytes) -> bytes:
    message_id = re.search(rb"(?im)^message-id:\s*(\S+)", original)
    note = {"notificationType": "Bounce", "bounce": {
        "bounceType": "Permanent", "bouncedRecipients": [{
            "emailAddress": recipient, "action": "failed", "status": "5.1.1",
            "diagnosticCode": "smtp; 550 5.1.1 user unknown"}]},
        "mail": {"headers": [{"name": "Message-ID",
                              "value": message_id.group(1).decode() if message_id else ""}]}}
    return (b"From: no-reply@sns.amazonaws.com\nTo: ses@example.com\n"
            b"Subject: AWS Notification Message\nContent-Type: text/plain\n\n"
            + json.dumps(note).encode() + b"\n")


def _message_id(original: bytes) -> bytes:
    found = re.search(rb"(?im)^message-id:\s*(\S+)", original)
    return found.group(1) if found else b"<none@nowhere>"


def auto_reply(recipient: str, original: bytes) -> bytes:
    return (b"From: %s\nTo: news@example.com\nSubject: Out of office\n"
            b"Auto-Submitted: auto-replied\nIn-Reply-To: %s\n\nI am away until Monday.\n"
            % (recipient.encode(), _message_id(original)))


def reply(recipient: str, original: bytes) -> bytes:
    return (b"From: Someone <%s>\nTo: replies@example.com\nSubject: Re: Newsletter\n"
            b"In-Reply-To: %s\nReferences: %s\n\nThanks!\n"
            % (recipient.encode(), _message_id(original), _message_id(original)))


Report = Callable[[str, bytes], bytes]
REPORTS: dict[str, tuple[Report, str, tuple[str, str] | None]] = {
    # kind: (build, event it causes when tied, suppression it adds when tied)
    "dsn": (dsn, "failed", ("bounce", "*")),
    "arf-abuse": (lambda r, o: arf(r, o, "abuse"), "complained", ("complaint", "")),
    "arf-opt-out": (lambda r, o: arf(r, o, "opt-out"), "unsubscribed", ("unsubscribe", "*")),
    "ses": (ses, "failed", ("bounce", "")),
    "auto-reply": (auto_reply, "", None),
    "reply": (reply, "replied", None),
}
FORGED_ORIGINAL = (b"Message-ID: <01jguessed0000000000000000@example.com>\n"
                   b"From: news@example.com\nTo: %s\nSubject: Newsletter\n\nhello\n"
                   % VICTIM.encode())


def _state(service: Service) -> tuple[list[Any], list[Any]]:
    with service.runtime.db.read() as conn:
        kept = conn.execute(sa.select(inbound_messages.c.status, inbound_messages.c.kind,
                                      inbound_messages.c.host)).all()
        suppressed = conn.execute(sa.select(suppressions.c.kind, suppressions.c.address,
                                            suppressions.c.domain)).all()
    return kept, suppressed


async def _effects(service: Service) -> list[dict[str, Any]]:
    found = []
    for domain in ("example.com", "other.example"):
        for event in await service.events(domain):
            if event["event"] in EFFECT_EVENTS:
                found.append(event)
    return found


@pytest.mark.parametrize("kind", list(REPORTS))
async def test_a_forged_report_changes_nothing(smtp_service: tuple[Service, int],
                                               smtp_relay: SmtpRelay, kind: str) -> None:
    """Naming an address that other.example mailed, with no VERP token and no real
    Message-ID: kept as one unmatched report, no event, no suppression, no count."""
    service, port = smtp_service
    await _deliver(service, smtp_relay, VICTIM, "other.example")
    build = REPORTS[kind][0]
    code, answer = await asyncio.to_thread(_smtp, port, build(VICTIM, FORGED_ORIGINAL),
                                           "postmaster@example.com", "")
    assert code == 250 and b"unmatched" in answer, answer
    kept, suppressed = _state(service)
    assert [(status, host) for status, _, host in kept] == [("unmatched", "example.com")]
    assert suppressed == []
    assert await _effects(service) == []


@pytest.mark.parametrize("kind", list(REPORTS))
async def test_the_message_id_of_another_domain_ties_nothing(
        smtp_service: tuple[Service, int], smtp_relay: SmtpRelay, kind: str) -> None:
    """A real Message-ID, but of other.example's message, in a report addressed to
    example.com: a report speaks only about the domains it was addressed to."""
    service, port = smtp_service
    original = (await _deliver(service, smtp_relay, VICTIM, "other.example")).data
    build = REPORTS[kind][0]
    code, answer = await asyncio.to_thread(_smtp, port, build(VICTIM, original),
                                           "postmaster@example.com", "")
    assert code == 250 and b"unmatched" in answer, answer
    assert _state(service)[1] == []
    assert await _effects(service) == []


@pytest.mark.parametrize("kind", list(REPORTS))
async def test_a_report_tied_by_message_id_acts(smtp_service: tuple[Service, int],
                                                smtp_relay: SmtpRelay, kind: str) -> None:
    """The same reports around the real returned message, addressed to its domain (not
    to the VERP address): their effects as before."""
    service, port = smtp_service
    original = (await _deliver(service, smtp_relay, VICTIM, "example.com")).data
    build, event, suppression = REPORTS[kind]
    code, answer = await asyncio.to_thread(_smtp, port, build(VICTIM, original),
                                           "postmaster@example.com", "")
    assert code == 250 and b"processed" in answer, answer
    kept, suppressed = _state(service)
    assert [status for status, _, _ in kept] == ["processed"]
    effects = await _effects(service)
    assert [e["event"] for e in effects] == ([event] if event else [])
    assert all(e["recipient"] == VICTIM for e in effects)
    assert [(k, a) for k, a, _ in suppressed] == ([(suppression[0], VICTIM)]
                                                  if suppression else [])


async def test_a_verp_token_ties_whatever_address_is_named(
        smtp_service: tuple[Service, int], smtp_relay: SmtpRelay) -> None:
    service, port = smtp_service
    sent = await _deliver(service, smtp_relay, "kijitora@example.org")
    await asyncio.to_thread(_smtp, port, dsn("forwarded@example.org", FORGED_ORIGINAL),
                            sent.sender)
    (failed,) = await service.events(event="failed")
    assert failed["recipient"] == "kijitora@example.org" and failed["bounce-match"] == "verp"
    assert [(k, a) for k, a, _ in _state(service)[1]] == [("bounce", "kijitora@example.org")]


async def test_our_delivery_header_must_agree_with_the_message_id(
        smtp_service: tuple[Service, int], smtp_relay: SmtpRelay) -> None:
    """A recipient of one message names another recipient of the same Message-ID but
    keeps their own X-Mailbeacon-Delivery header: no tie."""
    service, port = smtp_service
    await service.send(to=["mine@example.org", VICTIM], subject="Both", text="x",
                       **{"from": "news@example.com"})
    received = await smtp_relay.wait_for(2)
    mine = next(r for r in received if r.recipients == ["mine@example.org"])
    code, answer = await asyncio.to_thread(_smtp, port, dsn(VICTIM, mine.data),
                                           "postmaster@example.com")
    assert b"unmatched" in answer, answer
    assert _state(service)[1] == []
    # With the victim's own header (which only the victim's copy has) it is tied.
    theirs = next(r for r in received if r.recipients == [VICTIM])
    code, answer = await asyncio.to_thread(_smtp, port, dsn(VICTIM, theirs.data),
                                           "postmaster@example.com")
    assert b"processed" in answer, answer
    (failed,) = await service.events(event="failed")
    assert failed["bounce-match"] == "header"


async def test_unmatched_reports_are_listed(smtp_service: tuple[Service, int],
                                            smtp_relay: SmtpRelay) -> None:
    service, port = smtp_service
    original = (await _deliver(service, smtp_relay, VICTIM)).data
    await asyncio.to_thread(_smtp, port, dsn(VICTIM, FORGED_ORIGINAL), "postmaster@example.com")
    await asyncio.to_thread(_smtp, port, dsn(VICTIM, original), "postmaster@example.com")
    r = await service.client.get("/v3/example.com/inbound", params={"matched": "no"})
    assert r.status_code == 200, r.text
    (item,) = r.json()["items"]
    assert item["status"] == "unmatched" and item["kind"] == "bounce"
    assert item["results"][0]["recipient"] == VICTIM and item["results"][0]["match"] is None
    assert r.json()["total_count"] == 1
    r = await service.client.get("/v3/example.com/inbound", params={"matched": "yes"})
    assert [i["status"] for i in r.json()["items"]] == ["processed"]
    assert (await service.client.get("/v3/other.example/inbound")).json()["items"] == []
    r = await service.client.get("/v3/example.com/stats/total",
                                 params={"event": "unmatched-report", "duration": "1d"})
    assert r.status_code == 200, r.text
    assert sum(i["unmatched-report"]["total"] for i in r.json()["stats"]) == 1
    r = await service.client.get("/v3/example.com/inbound", params={"matched": "maybe"})
    assert r.status_code == 400 and "matched" in r.json()["message"]
    # Keyset paging as the other lists: newest first, page=next|prev from an item's id.
    r = await service.client.get("/v3/example.com/inbound", params={"limit": "1"})
    newest = r.json()["items"]
    assert [i["status"] for i in newest] == ["processed"] and r.json()["total_count"] == 2
    r = await service.client.get(r.json()["paging"]["next"])
    older = r.json()["items"]
    assert [i["status"] for i in older] == ["unmatched"]
    assert (await service.client.get(r.json()["paging"]["next"])).json()["items"] == []
    r = await service.client.get(r.json()["paging"]["previous"])
    assert r.json()["items"] == newest
    r = await service.client.get("/v3/example.com/inbound", params={"page": "last",
                                                                    "limit": "1"})
    assert r.json()["items"] == older
    r = await service.client.get("/v3/example.com/inbound", params={"page": "next"})
    assert r.status_code == 400 and "'id'" in r.json()["message"]


async def test_from_a_mailbox_the_headers_give_the_scope(smtp_service: tuple[Service, int],
                                                         smtp_relay: SmtpRelay) -> None:
    """A polled mailbox has no envelope: To/Delivered-To say which bounce domain a report
    came to, and the same rules apply."""
    service, _ = smtp_service
    theirs = (await _deliver(service, smtp_relay, VICTIM, "other.example")).data
    ours = (await _deliver(service, smtp_relay, VICTIM, "example.com")).data
    inbound = service.runtime.inbound
    # dsn() is addressed To: postmaster@example.com.
    assert await inbound.receive(dsn(VICTIM, theirs), source="mailbox") == "unmatched"
    assert await inbound.receive(dsn(VICTIM, FORGED_ORIGINAL), source="mailbox") == "unmatched"
    nowhere = dsn(VICTIM, ours).replace(b"To: postmaster@example.com",
                                        b"To: someone@elsewhere.example")
    assert await inbound.receive(nowhere, source="mailbox") == "unmatched"
    assert _state(service)[1] == []
    assert await inbound.receive(dsn(VICTIM, ours), source="mailbox") == "processed"
    (failed,) = await service.events(event="failed")
    assert failed["bounce-match"] == "header"

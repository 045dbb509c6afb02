"""List-Unsubscribe and List-Unsubscribe-Post (RFC 8058): plain URLs (receivers do not
decode encoded words there), DKIM-signed, on every message that can unsubscribe anyone,
whatever is tracked."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import dkim
import pytest

from mailbeacon.domains.domain import update_domain
from mailbeacon.send.dkim import DkimKey, generate_key
from mailbeacon.send.dkim import dns_record as dkim_record
from tests.support import Received, Service, SmtpRelay


async def test_list_unsubscribe_is_raw_urls_folded_between_them(
        service: Service, smtp_relay: SmtpRelay) -> None:
    await service.send(to="alice@example.org", subject="x", html="<p>hi</p>")
    (received,) = await smtp_relay.wait_for(1)
    raw = received.data.decode("ascii")
    (header,) = re.findall(r"\r\nList-Unsubscribe: (.*?)\r\n(?! )", raw, re.S)
    assert "=?" not in header  # no RFC 2047 encoded word
    urls = [u.strip() for u in header.replace("\r\n", "").split(",")]
    assert len(urls) == 2
    assert re.fullmatch(r"<http://[^<>\s]+/u/[a-z0-9]+>", urls[0])
    assert re.fullmatch(r"<mailto:unsub\+[a-z0-9]+@example\.com>", urls[1])
    assert "\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in raw
    # The parsed header is the same two URLs (what the existing tests read).
    assert [u.strip() for u in str(received.message["List-Unsubscribe"]).split(",")] == urls


# --- one-click unsubscribe whatever is tracked (issue 18.3) ---------------------------


def _signed_headers(received: Received, key: DkimKey) -> set[str]:
    """The header names the DKIM signature covers, once it verified."""
    record = dkim_record(key).encode()

    def dns(qname: bytes, timeout: int = 5) -> bytes | None:
        return record if qname == f"{key.selector}._domainkey.example.com.".encode() else None

    assert dkim.verify(received.data, dnsfunc=dns)
    signature = str(received.message["DKIM-Signature"]).replace("\r\n", "")
    found = re.search(r"\bh=([^;]+)", signature)
    assert found
    return {h.strip().lower() for h in found.group(1).split(":")}


async def _domain(service: Service, **changes: Any) -> None:
    await asyncio.to_thread(update_domain, service.runtime.db, "example.com", **changes)


@pytest.mark.parametrize("how", ["o:tracking=no", "domain tracking off"])
async def test_one_click_headers_without_tracking(service: Service, smtp_relay: SmtpRelay,
                                                  how: str) -> None:
    key = generate_key("mb1", 1024)
    await _domain(service, dkim_selector=key.selector, dkim_private_key=key.private_pem)
    fields: dict[str, str] = {}
    if how == "o:tracking=no":
        fields["o:tracking"] = "no"
    else:
        for kind in ("open", "click"):
            r = await service.client.put(f"/v3/domains/example.com/tracking/{kind}",
                                         data={"active": "no"})
            assert r.status_code == 200, r.text
    await service.send(to="alice@example.org", subject="x", html='<a href="https://a.test/">a</a>',
                       **fields)
    (received,) = await smtp_relay.wait_for(1)
    msg = received.message
    assert "/c/" not in received.part("text/html") and "/o/" not in received.part("text/html")
    assert str(msg["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    assert re.fullmatch(r"<http://[^<>\s]+/u/[a-z0-9]+>, <mailto:unsub\+[a-z0-9]+@example\.com>",
                        str(msg["List-Unsubscribe"]))
    assert {"list-unsubscribe", "list-unsubscribe-post"} <= _signed_headers(received, key)


async def test_setting_off_keeps_them_where_the_message_can_unsubscribe(
        service: Service, smtp_relay: SmtpRelay) -> None:
    r = await service.client.put("/v3/domains/example.com/tracking/unsubscribe",
                                 data={"active": "no", "list_unsubscribe": "no"})
    assert r.status_code == 200, r.text
    assert r.json()["unsubscribe"]["list_unsubscribe"] is False
    # No footer, no placeholder: no unsubscribe scope, no headers.
    await service.send(to="a@example.org", subject="x", text="hello")
    # A placeholder in the body: the headers, even without tracking.
    await service.send(to="b@example.org", subject="x", text="bye: %unsubscribe_url%",
                       **{"o:tracking": "no"})
    received = await smtp_relay.wait_for(2)
    by_rcpt = {item.recipients[0]: item.message for item in received}
    assert "List-Unsubscribe" not in by_rcpt["a@example.org"]
    assert "List-Unsubscribe-Post" not in by_rcpt["a@example.org"]
    assert by_rcpt["b@example.org"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # The footer is a scope too.
    r = await service.client.put("/v3/domains/example.com/tracking/unsubscribe",
                                 data={"active": "yes"})
    assert r.json()["unsubscribe"]["list_unsubscribe"] is False  # untouched when not given
    await service.send(to="c@example.org", subject="x", text="hello", **{"o:tracking": "no"})
    (_, _, third) = await smtp_relay.wait_for(3)
    assert third.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "/u/" in third.part("text/plain")


async def test_submitted_list_unsubscribe_is_replaced_only_where_we_set_ours(
        service: Service, smtp_relay: SmtpRelay) -> None:
    raw = (b"From: shop@example.com\r\nTo: alice@example.org\r\nSubject: x\r\n"
           b"List-Unsubscribe: <mailto:leave@shop.example.com>\r\n\r\nbody\r\n")

    async def submit() -> Received:
        before = len(smtp_relay.received)
        r = await service.client.post("/v3/example.com/messages.mime",
                                      data={"to": "alice@example.org"},
                                      files={"message": ("m.eml", raw, "message/rfc822")})
        assert r.status_code == 200, r.text
        return (await smtp_relay.wait_for(before + 1))[before]

    ours = (await submit()).message
    assert len(ours.get_all("List-Unsubscribe") or []) == 1
    assert "/u/" in str(ours["List-Unsubscribe"])
    await _domain(service, list_unsubscribe=False)
    theirs = (await submit()).message
    assert str(theirs["List-Unsubscribe"]) == "<mailto:leave@shop.example.com>"

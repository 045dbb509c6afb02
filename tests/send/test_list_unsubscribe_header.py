"""List-Unsubscribe goes out as plain URLs: receivers do not decode encoded words there."""

from __future__ import annotations

import re

from tests.conftest import Service, SmtpRelay


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

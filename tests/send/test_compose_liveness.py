"""While a large message is composed, the server keeps answering (issue 19, section 3).

A liveness bound, not a speed figure: each request within 1 s on a loaded machine.
bench/compose_liveness.py gives the real latencies."""

from __future__ import annotations

import asyncio
import time

import sqlalchemy as sa

from mailbeacon.model.tokens import Kind, Token
from mailbeacon.storage.schema import deliveries
from tests.support import API_KEY, Service, SmtpRelay

LIVENESS_BOUND = 1.0  # seconds


def big_html(size: int = 5_000_000) -> str:
    """A newsletter-like body: paragraphs with a link every ~2 KB."""
    block = ('<tr><td><p>Product: a good thing &amp; more, described at length. '
             + "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 30
             + '<a href="https://shop.example.com/p?id=1&amp;utm_source=news">see</a>'
             "</p></td></tr>\n")
    rows = block * (size // len(block) + 1)
    return f"<html><body><table>{rows}</table></body></html>"


async def test_pixels_and_api_answer_while_a_5mb_message_is_composed(
        service: Service, smtp_relay: SmtpRelay) -> None:
    recipients = [f"user{i}@example.org" for i in range(1000)]
    await service.send(to=recipients, subject="Big", html=big_html(), text="Hello")
    await service.start_http()
    with service.runtime.db.read() as conn:
        delivery = conn.execute(sa.select(deliveries.c.id).limit(1)).scalar_one()
    pixel = f"/o/{service.runtime.codec.encode(Token(Kind.OPEN, delivery))}"
    await smtp_relay.wait_for(1, timeout=120)  # composing has begun, and goes on

    worst = {"pixel": 0.0, "api": 0.0}
    until = time.monotonic() + 6
    while time.monotonic() < until:
        for name, path, auth in (("pixel", pixel, None), ("api", "/v3/domains",
                                                          ("api", API_KEY))):
            started = time.monotonic()
            r = await service.web.get(path, auth=auth)
            worst[name] = max(worst[name], time.monotonic() - started)
            assert r.status_code == 200, r.text
        await asyncio.sleep(0.05)
    assert len(smtp_relay.received) < len(recipients)  # it was still composing
    assert worst["pixel"] < LIVENESS_BOUND and worst["api"] < LIVENESS_BOUND, worst

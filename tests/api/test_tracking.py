"""Opens and clicks through the tracking endpoints, recorded with group commit."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import sqlalchemy as sa

from mailbeacon.storage.schema import recipient_state, stats_buckets
from mailbeacon.track.endpoints import PIXEL
from tests.support import Service, SmtpRelay

HTML = ('<html><body><a href="https://shop.example.net/a?x=1&amp;y=2">a</a>'
        '<a href="https://shop.example.net/b">b</a></body></html>')


async def _sent(service: Service, relay: SmtpRelay, **fields: Any) -> tuple[list[str], str]:
    await service.send(to="alice@example.org", subject="x", html=HTML, **fields)
    (received,) = await relay.wait_for(1)
    await service.wait_events(1, event="delivered")
    html = received.part("text/html")
    links = re.findall(r'href="(http://[^"]+/c/[a-z0-9]+)">', html)
    (pixel,) = re.findall(r'src="(http://[^"]+/o/[a-z0-9]+)"', html)
    return links, pixel


async def test_open_pixel_records_opened(service: Service, smtp_relay: SmtpRelay) -> None:
    _, pixel = await _sent(service, smtp_relay, **{"o:tag": "promo"})
    r = await service.hit(pixel, headers={"user-agent": "Thunderbird/115"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/gif"
    assert r.content == PIXEL
    assert "no-store" in r.headers["cache-control"]
    (opened,) = await service.events(event="opened")
    assert opened["recipient"] == "alice@example.org"
    assert opened["client-info"]["user-agent"] == "Thunderbird/115"
    assert opened["ip"] == "127.0.0.1"
    assert opened["tags"] == ["promo"]


async def test_click_redirects_and_counts_as_first_open(service: Service,
                                                        smtp_relay: SmtpRelay) -> None:
    links, _ = await _sent(service, smtp_relay)
    r = await service.hit(links[0])
    assert r.status_code == 302
    assert r.headers["location"] == "https://shop.example.net/a?x=1&y=2"
    (clicked,) = await service.events(event="clicked")
    assert clicked["url"] == "https://shop.example.net/a?x=1&y=2"
    (opened,) = await service.events(event="opened")
    assert opened["flags"]["is-implied-by-click"] is True
    r = await service.hit(links[1])
    assert r.headers["location"] == "https://shop.example.net/b"
    assert len(await service.events(event="opened")) == 1  # only the first click implies one


async def test_lowercased_tokens_still_work(service: Service, smtp_relay: SmtpRelay) -> None:
    links, pixel = await _sent(service, smtp_relay)
    upper = links[0].rsplit("/", 1)[0] + "/" + links[0].rsplit("/", 1)[1].upper()
    assert (await service.hit(upper)).status_code == 302
    assert (await service.hit(pixel.lower())).status_code == 200
    assert len(await service.events(event="clicked")) == 1


async def test_forged_tokens_never_redirect_or_record(service: Service,
                                                      smtp_relay: SmtpRelay) -> None:
    links, pixel = await _sent(service, smtp_relay)
    token = links[0].rsplit("/", 1)[1]
    flipped = token[:-5] + ("a" if token[-5] != "a" else "b") + token[-4:]
    for bad in (flipped, token[:-8], token[:20], "zzzz", token + "aa", "0" * len(token)):
        r = await service.hit(f"/c/{bad}")
        assert r.status_code == 404, bad
        assert "location" not in r.headers
        assert "text/html" in r.headers["content-type"]
    ptoken = pixel.rsplit("/", 1)[1]
    r = await service.hit(f"/o/{ptoken[:-3]}abc")
    assert r.status_code == 200 and r.content == PIXEL
    # An open token is not a click token, and the other way round.
    assert (await service.hit(f"/c/{ptoken}")).status_code == 404
    assert await service.events(event="clicked") == []
    assert await service.events(event="opened") == []


async def test_head_and_other_methods(service: Service, smtp_relay: SmtpRelay) -> None:
    links, pixel = await _sent(service, smtp_relay)
    path = "/" + pixel.split("/", 3)[3]
    r = await service.client.head(path, auth=None)
    assert r.status_code == 200 and r.content == b""
    r = await service.client.post(path, auth=None)
    assert r.status_code == 405


async def test_state_and_stats_follow_hits(service: Service, smtp_relay: SmtpRelay) -> None:
    links, pixel = await _sent(service, smtp_relay, **{"o:tag": "promo"})
    # Concurrent hits land in shared group commits; every one is recorded.
    results = await asyncio.gather(*[service.hit(pixel) for _ in range(20)],
                                   *[service.hit(links[i % 2]) for i in range(10)])
    assert [r.status_code for r in results] == [200] * 20 + [302] * 10
    db = service.runtime.db
    with db.read() as conn:
        (state,) = conn.execute(sa.select(recipient_state)).all()
        stats = {(r.tag, r.event): r.count for r in conn.execute(sa.select(stats_buckets))}
    assert state.click_count == 10
    # A click before any open would count as an open too; here opens and clicks race, so
    # the total is 20 or 21, and the event log agrees with the state either way.
    opened = await service.events(event="opened")
    assert state.open_count == len(opened) in (20, 21)
    assert state.first_open_at <= state.last_open_at
    assert state.first_click_at <= state.last_click_at
    for tag in ("", "promo"):
        assert stats[(tag, "opened")] == len(opened)
        assert stats[(tag, "unique_opened")] == 1
        assert stats[(tag, "clicked")] == 10
        assert stats[(tag, "unique_clicked")] == 1
        assert stats[(tag, "accepted")] == 1
        assert stats[(tag, "delivered")] == 1


async def test_unknown_paths_are_json_404(service: Service) -> None:
    r = await service.client.get("/nothing-here")
    assert r.status_code == 404
    assert r.json() == {"message": "Not found"}

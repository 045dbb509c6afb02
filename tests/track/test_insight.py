"""Hits through the real tracking endpoints: enrichment, bot verdicts, human counts,
engagement, privacy."""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa

from mailbeacon.storage.schema import contacts, domains, recipient_state, stats_buckets
from tests.support import Service, SmtpRelay

HTML = ('<html><body><a href="https://shop.example.net/a">a</a>'
        '<a href="https://shop.example.net/b">b</a>'
        '<a href="https://shop.example.net/c">c</a></body></html>')
APPLE_MPP = "Mozilla/5.0"
GMAIL_PROXY = ("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 "
               "(via ggpht.com GoogleImageProxy)")
THUNDERBIRD = ("Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 "
               "Thunderbird/115.5.0")
IOS_MAIL = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Mobile/15E148")


async def _sent(service: Service, relay: SmtpRelay, **fields: Any) -> tuple[list[str], str, str]:
    before = len(relay.received)
    await service.send(to=fields.pop("to", "alice@example.org"), subject="x", html=HTML,
                       **fields)
    received = await relay.wait_for(before + 1)
    await service.wait_events(before + 1, event="delivered")
    html = received[before].part("text/html")
    links = re.findall(r'href="(http://[^"]+/c/[a-z0-9]+)">', html)
    (honeypot,) = re.findall(r'href="(http://[^"]+/c/[a-z0-9]+)" aria-hidden', html)
    (pixel,) = re.findall(r'src="(http://[^"]+/o/[a-z0-9]+)"', html)
    return links, pixel, honeypot


async def _hit(service: Service, url: str, ip: str, agent: str, method: str = "GET") -> Any:
    """Over the real socket, as a proxy on 127.0.0.1 (trusted) forwarding for `ip`."""
    return await service.hit(url, method, headers={"user-agent": agent, "x-forwarded-for": ip})


async def _slow_clicks_are_human(service: Service) -> None:
    r = await service.client.put("/v3/domains/example.com/bots",
                                 data={"click_after_delivery_seconds": "0"})
    assert r.status_code == 200 and r.json()["bots"]["click_after_delivery_seconds"] == 0


async def test_clients_locations_and_verdicts(service: Service, smtp_relay: SmtpRelay) -> None:
    links, pixel, _ = await _sent(service, smtp_relay)
    await _hit(service, pixel, "17.58.0.1", APPLE_MPP)
    await _hit(service, pixel, "66.249.84.1", GMAIL_PROXY)
    await _hit(service, pixel, "81.2.69.142", THUNDERBIRD)
    await _hit(service, pixel, "81.2.69.142", IOS_MAIL, method="HEAD")
    opens = {e["client-info"]["user-agent"] + e["method"]: e
             for e in await service.events(event="opened")}
    apple = opens[APPLE_MPP + "GET"]
    assert apple["client-info"]["bot"] == "apple" and "apple-mpp" in apple["bot-reasons"]
    gmail = opens[GMAIL_PROXY + "GET"]
    assert gmail["client-info"]["bot"] == "gmail"
    assert gmail["client-info"]["client-name"] == "Gmail"
    assert gmail["geolocation"]["country"] == "Unknown"  # the proxy's place is not the reader's
    bird = opens[THUNDERBIRD + "GET"]
    assert bird["client-info"]["bot"] == "" and bird["client-info"]["client-name"] == "Thunderbird"
    assert bird["client-info"]["device-type"] == "desktop"
    assert bird["geolocation"]["country"] == "GB" and bird["ip"] == "81.2.69.142"
    head = opens[IOS_MAIL + "HEAD"]
    assert head["client-info"]["bot"] == "generic" and "head-request" in head["bot-reasons"]
    with service.runtime.db.read() as conn:
        stats = {r.event: (r.count, r.human_count) for r in conn.execute(
            sa.select(stats_buckets).where(stats_buckets.c.tag == ""))}
    # All four are kept; Gmail's proxy and Thunderbird are people, Apple MPP and HEAD not.
    assert stats["opened"] == (4, 2)
    assert stats["unique_opened"] == (1, 1)


async def test_scanner_clicks(service: Service, smtp_relay: SmtpRelay) -> None:
    links, _, honeypot = await _sent(service, smtp_relay)
    # Three links of one message within a second, right after delivery: a scanner.
    for link in links:
        await _hit(service, link, "81.2.69.142", THUNDERBIRD)
    clicks = await service.events(event="clicked", ascending="yes")
    assert all(c["client-info"]["bot"] == "generic" for c in clicks)
    assert "fast-click" in clicks[0]["bot-reasons"]
    assert "click-burst" in clicks[-1]["bot-reasons"]
    r = await _hit(service, honeypot, "81.2.69.142", THUNDERBIRD)
    assert r.status_code == 302
    (trap,) = [c for c in await service.events(event="clicked") if c["link-index"] == 65535]
    assert "honeypot" in trap["bot-reasons"]


async def test_human_clicks_raise_engagement(service: Service, smtp_relay: SmtpRelay) -> None:
    await _slow_clicks_are_human(service)
    links, pixel, _ = await _sent(service, smtp_relay)
    await _hit(service, pixel, "81.2.69.142", THUNDERBIRD)
    await _hit(service, pixel, "81.2.69.142", THUNDERBIRD)
    await _hit(service, links[0], "81.2.69.142", THUNDERBIRD)
    (click,) = await service.events(event="clicked")
    assert click["client-info"]["bot"] == ""
    with service.runtime.db.read() as conn:
        person = conn.execute(sa.select(contacts)).one()
        state = conn.execute(sa.select(recipient_state)).one()
    assert (person.address, person.opens, person.clicks) == ("alice@example.org", 2, 1)
    assert abs(person.score - (1 + 1 / 2 + 3)) < 0.01  # diminishing opens, a click
    assert (state.human_open_count, state.human_click_count) == (2, 1)
    assert state.recipient == "alice@example.org"


async def test_privacy_never_and_truncated_ips(service: Service, smtp_relay: SmtpRelay) -> None:
    with service.runtime.db.write() as conn:
        conn.execute(domains.update().values(track_activities="never"))
    _, pixel, _ = await _sent(service, smtp_relay)
    await _hit(service, pixel, "81.2.69.142", THUNDERBIRD)
    (opened,) = await service.events(event="opened")
    assert opened["recipient"] == "" and "ip" not in opened
    assert "user-agent" not in opened["client-info"]
    assert await service.events(event="opened", recipient="alice@example.org") == []
    with service.runtime.db.read() as conn:  # nothing kept per recipient either
        assert conn.execute(sa.select(recipient_state)).all() == []
    with service.runtime.db.write() as conn:
        conn.execute(domains.update().values(track_activities="always", truncate_ips=True))
        assert conn.execute(sa.select(stats_buckets.c.count).where(
            stats_buckets.c.event == "opened", stats_buckets.c.tag == "")).scalar() == 1
    await _hit(service, pixel, "81.2.69.142", THUNDERBIRD)
    latest = (await service.events(event="opened"))[0]
    assert latest["ip"] == "81.2.69.0" and latest["recipient"] == "alice@example.org"


async def test_consent_mode(service: Service, smtp_relay: SmtpRelay) -> None:
    with service.runtime.db.write() as conn:
        conn.execute(domains.update().values(track_activities="consent"))
    _, pixel, _ = await _sent(service, smtp_relay, to="bob@example.org")
    await _hit(service, pixel, "81.2.69.142", THUNDERBIRD)
    assert (await service.events(event="opened"))[0]["recipient"] == ""
    with service.runtime.db.write() as conn:
        conn.execute(contacts.update().where(contacts.c.address == "bob@example.org")
                     .values(consent=True))
    await _hit(service, pixel, "81.2.69.142", THUNDERBIRD)
    assert (await service.events(event="opened"))[0]["recipient"] == "bob@example.org"

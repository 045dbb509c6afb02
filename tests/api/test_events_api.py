"""The Events API over HTTP: filters, paging URLs, and bad parameters."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.support import Service, SmtpRelay


async def _walk(service: Service, url: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    while True:
        r = await service.client.get(url)
        assert r.status_code == 200, r.text
        page = r.json()
        if not page["items"]:
            return seen
        seen += page["items"]
        url = page["paging"]["next"].removeprefix("http://testserver")


async def test_filters_and_paging(service: Service, smtp_relay: SmtpRelay) -> None:
    for i in range(6):
        await service.send(to=f"user{i}@example.org", subject=f"s{i}", text="t",
                           **{"o:tag": "even" if i % 2 == 0 else "odd"})
    await smtp_relay.wait_for(6)
    await service.wait_events(6, event="delivered")
    everything = await service.events(ascending="yes")
    assert len(everything) == 12
    assert [e["id"] for e in everything] == sorted(e["id"] for e in everything)
    assert len(await service.events(tags="even")) == 6
    assert len(await service.events(tags="EVEN", event="delivered")) == 3
    one = await service.events(recipient="USER3@example.org")
    assert {e["event"] for e in one} == {"accepted", "delivered"}
    mid = one[0]["message"]["headers"]["message-id"]
    assert len(await service.events(**{"message-id": f"<{mid}>"})) == 2
    walked = await _walk(service, "/v3/example.com/events?ascending=yes&limit=5")
    assert [e["id"] for e in walked] == [e["id"] for e in everything]
    newest_first = await _walk(service, "/v3/example.com/events?limit=4")
    assert [e["id"] for e in newest_first] == [e["id"] for e in reversed(everything)]


async def test_walk_while_events_arrive(service: Service, smtp_relay: SmtpRelay) -> None:
    for i in range(5):
        await service.send(to=f"early{i}@example.org", subject="s", text="t")
    await service.wait_events(10)
    before = {e["id"] for e in await service.events()}
    r = await service.client.get("/v3/example.com/events",
                                 params={"ascending": "yes", "limit": 3})
    seen = [e["id"] for e in r.json()["items"]]
    url = r.json()["paging"]["next"].removeprefix("http://testserver")
    sender = asyncio.ensure_future(asyncio.gather(
        *[service.send(to=f"late{i}@example.org", subject="s", text="t") for i in range(5)]))
    for _ in range(100):
        page = (await service.client.get(url)).json()
        seen += [e["id"] for e in page["items"]]
        url = page["paging"]["next"].removeprefix("http://testserver")
        if sender.done() and not page["items"]:
            break
        await asyncio.sleep(0.01)
    await sender
    # The late messages' deliveries may still be coming (the worker is async): the rest
    # of the walk starts once they are all stored, so none is missed for being late.
    await service.wait_events(20)
    seen += [e["id"] for e in await _walk(service, url)]
    assert len(seen) == len(set(seen))  # nothing twice
    assert seen == sorted(seen)  # in order
    assert before <= set(seen)  # nothing that existed was skipped
    assert set(seen) == {e["id"] for e in await service.events()}  # nor anything new


async def test_previous_page(service: Service, smtp_relay: SmtpRelay) -> None:
    for i in range(3):
        await service.send(to=f"u{i}@example.org", subject="s", text="t")
    await service.wait_events(6)
    first = (await service.client.get("/v3/example.com/events",
                                      params={"ascending": "yes", "limit": 2})).json()
    second = (await service.client.get(
        first["paging"]["next"].removeprefix("http://testserver"))).json()
    back = (await service.client.get(
        second["paging"]["previous"].removeprefix("http://testserver"))).json()
    assert [e["id"] for e in back["items"]] == [e["id"] for e in first["items"]]


async def test_bad_parameters_are_400(service: Service) -> None:
    for params, words in (({"limit": "301"}, "limit"), ({"limit": "x"}, "limit"),
                          ({"begin": "yesterday"}, "begin"), ({"ascending": "up"}, "ascending")):
        r = await service.client.get("/v3/example.com/events", params=params)
        assert r.status_code == 400, params
        assert words in r.json()["message"]
    r = await service.client.get("/v3/example.com/events/not-a-page-token")
    assert r.status_code == 400
    r = await service.client.get("/v3/unknown.example.com/events")
    assert r.status_code == 404


async def test_every_mailgun_filter_applies(service: Service, smtp_relay: SmtpRelay) -> None:
    await service.send(to="ann@example.org", subject="Spring sale", text="t",
                       **{"o:tag": ["promo", "spring"]})
    await service.send(to="ben@example.org", subject="Your receipt", text="t",
                       **{"o:tag": "receipt"})
    await smtp_relay.wait_for(2)
    await service.wait_events(2, event="delivered")

    async def recipients(**params: str) -> list[str]:
        return sorted({e["recipient"] for e in await service.events(**params)})

    assert await recipients(subject="sale") == ["ann@example.org"]
    assert await recipients(subject="NOT sale") == ["ben@example.org"]
    assert await recipients(subject='"your receipt"') == ["ben@example.org"]
    assert await recipients(to="ben@example.org") == ["ben@example.org"]
    assert await recipients(**{"from": "nobody@example.net"}) == []
    assert await recipients(tags="promo spring") == ["ann@example.org"]
    assert await recipients(tags="spring OR receipt") == ["ann@example.org", "ben@example.org"]
    assert await recipients(tags="NOT promo") == ["ben@example.org"]
    assert await recipients(event="NOT accepted") == ["ann@example.org", "ben@example.org"]
    assert len(await service.events(event="NOT accepted")) == 2
    assert await recipients(recipient="ann@example.org OR ben@example.org") == [
        "ann@example.org", "ben@example.org"]


async def test_unknown_parameters_are_400_naming_them(service: Service) -> None:
    for params, words in (({"subjekt": "x"}, "unknown parameter 'subjekt'"),
                          ({"tag": "x"}, "unknown parameter 'tag'"),
                          ({"size": ">1000"}, "filter 'size' is not supported"),
                          ({"subject": '"open'}, "subject: a quote is not closed"),
                          ({"event": "opened AND clicked"}, "use 'a OR b'")):
        r = await service.client.get("/v3/example.com/events", params=params)
        assert r.status_code == 400, params
        assert words in r.json()["message"]
    r = await service.client.get("/v3/example.com/events?tags=a&tags=b")
    assert r.status_code == 400
    assert "'tags' is given more than once" in r.json()["message"]
    r = await service.client.get("/v3/example.com/events", params={"pretty": "yes"})
    assert r.status_code == 200


async def test_paging_urls_come_from_the_public_url(service_factory: Any) -> None:
    """Not from the Host header, which any client sets (issue 12.5)."""
    async with service_factory(public_url="https://mail.example.com/mb/") as service:
        await service.add_domain("example.com")
        await service.send(to="a@example.org", subject="s", text="t")
        for path in ("/v3/example.com/events", "/v3/example.com/bounces",
                     "/v3/example.com/tags", "/v3/example.com/contacts",
                     "/v3/example.com/campaigns", "/v3/example.com/inbound"):
            r = await service.client.get(path, headers={"Host": "evil.test"})
            assert r.status_code == 200, r.text
            urls = list(r.json()["paging"].values())
            assert urls and all(u.startswith(f"https://mail.example.com/mb{path}")
                                for u in urls), urls
            assert "evil.test" not in r.text

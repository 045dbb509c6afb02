"""The TLS ask endpoint, HSTS on https tracking hosts, and links in the domain's
web_scheme."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from mailbeacon.domains.domain import Domain
from mailbeacon.storage.db import Database
from mailbeacon.track.hosts import TrackingHosts, host_name
from tests.support import Service, SmtpRelay

PUBLIC = "https://mb.example.net"


@pytest.fixture
async def hosted(service_factory: Callable[..., Any],
                 smtp_relay: SmtpRelay) -> AsyncIterator[Service]:
    async with service_factory(relay=smtp_relay.url, public_url=PUBLIC) as svc:
        await svc.add_domain("example.com", tracking_url="http://email.example.com")
        await svc.add_domain("bücher.example", tracking_url="https://Links.Bücher.example")
        await svc.add_domain("plain.example")  # links on the public host
        yield svc


async def ask(service: Service, *params: tuple[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=service.app),
                                 base_url="http://127.0.0.1:8080") as anonymous:
        return await anonymous.get("/tls/ask", params=list(params))


@pytest.mark.parametrize("name", [
    "email.example.com", "EMAIL.Example.COM", "email.example.com.", "mb.example.net",
    "links.xn--bcher-kva.example", "LINKS.BÜCHER.example", "links.bücher.example."])
async def test_ask_says_yes_for_tracking_and_public_hosts(hosted: Service, name: str) -> None:
    r = await ask(hosted, ("domain", name))
    assert r.status_code == 200, r.text
    assert r.json()["domain"] in ("email.example.com", "mb.example.net",
                                  "links.xn--bcher-kva.example")


@pytest.mark.parametrize("name", [
    "example.com", "plain.example", "evil.example", "sub.email.example.com",
    "email.example.co", "xn--bcher-kva.example"])
async def test_ask_says_no_for_other_names(hosted: Service, name: str) -> None:
    r = await ask(hosted, ("domain", name))
    assert r.status_code == 404
    assert r.json() == {"message": "Not a tracking host of this server"}


@pytest.mark.parametrize("value", [
    "", " ", "email.example.com ", " email.example.com", "email.example.com..",
    "*.example.com", "email.example.com:443", "127.0.0.1", "[::1]", "::1",
    "email..example.com", "user@email.example.com", "email.example.com/x",
    "email.example.com\x00", "-email.example.com", "a" * 64 + ".example.com",
    ("a" * 60 + ".") * 5 + "com", "x" * 5000, "localhost", "1.2.3.4.5",
    "email.example.com%00", "ema\u0301il.example.com\u200b\n"])
async def test_ask_refuses_what_is_not_a_host_name(hosted: Service, value: str) -> None:
    r = await ask(hosted, ("domain", value))
    assert r.status_code == 400, value
    assert r.json() == {"message": "'domain' is not a host name"}


async def test_ask_wants_exactly_one_domain_and_no_key(hosted: Service) -> None:
    assert (await ask(hosted)).status_code == 400
    r = await ask(hosted, ("domain", "email.example.com"), ("domain", "evil.example"))
    assert r.status_code == 400
    assert "one 'domain'" in r.json()["message"]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=hosted.app),
                                 base_url="http://x") as anonymous:
        r = await anonymous.post("/tls/ask?domain=email.example.com")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, HEAD"


async def test_a_new_tracking_host_is_known_at_once(hosted: Service) -> None:
    assert (await ask(hosted, ("domain", "t.new.example"))).status_code == 404
    await asyncio.sleep(1.05)  # past miss_age: an unknown name reloads the snapshot
    await hosted.add_domain("new.example", tracking_url="https://t.new.example")
    assert (await ask(hosted, ("domain", "t.new.example"))).status_code == 200


async def test_unknown_names_reload_at_most_once_per_miss_age(db: Database) -> None:
    now = [100.0]
    hosts = TrackingHosts(db, PUBLIC, clock=lambda: now[0])
    loads = 0
    real = hosts._load

    async def counted() -> None:
        nonlocal loads
        loads += 1
        await real()

    hosts._load = counted  # type: ignore[method-assign]
    results = await asyncio.gather(*(hosts.may_certify(f"n{i}.example") for i in range(50)))
    assert not any(results)
    assert loads == 1  # fifty askers at once shared one load
    for _ in range(20):
        await hosts.may_certify("evil.example")
    assert loads == 1
    now[0] += 1.5
    assert await hosts.may_certify("mb.example.net")  # known: no reload needed
    assert loads == 1
    await hosts.may_certify("evil.example")
    assert loads == 2


def test_host_name_is_canonical() -> None:
    assert host_name("Email.Example.COM.") == "email.example.com"
    assert host_name("bücher.example") == "xn--bcher-kva.example"
    assert host_name("10.0.0.1") is None
    assert host_name("email.example.com:443") is None


def test_links_follow_web_scheme() -> None:
    base = Domain("example.com", "id", 0, True, "yes", False, "http://email.example.com:8080")
    assert base.tracking_base("http://x") == "http://email.example.com:8080"
    https = Domain("example.com", "id", 0, True, "yes", False, "http://email.example.com:8080/",
                   web_scheme="https")
    assert https.tracking_base("http://x") == "https://email.example.com"
    public = Domain("example.com", "id", 0, True, "yes", False, None, web_scheme="https")
    assert public.tracking_base("http://mb.example.net:80/base/") == \
        "https://mb.example.net/base"
    same = Domain("example.com", "id", 0, True, "yes", False, "https://e.example.com:8443",
                  web_scheme="https")
    assert same.tracking_base("http://x") == "https://e.example.com:8443"


async def test_web_scheme_through_the_api_and_into_links(hosted: Service,
                                                         smtp_relay: SmtpRelay) -> None:
    client = hosted.client
    r = await client.get("/v3/domains/example.com")
    assert r.json()["domain"]["web_scheme"] == "http"
    r = await client.put("/v3/domains/example.com", data={"web_scheme": "ftp"})
    assert r.status_code == 400
    assert r.json() == {"message": "'web_scheme' must be http or https, got 'ftp'"}
    r = await client.put("/v3/domains/example.com", data={"web_scheme": "HTTPS"})
    assert r.status_code == 200, r.text
    assert r.json()["domain"]["web_scheme"] == "https"
    assert r.json()["domain"]["tracking_url"] == "http://email.example.com"
    await hosted.send(to="alice@example.org", subject="x",
                      html='<a href="https://shop.example.net/">x</a>')
    (received,) = await smtp_relay.wait_for(1)
    html = received.part("text/html")
    assert re.search(r'href="https://email\.example\.com/c/[a-z0-9]+"', html), html
    assert re.search(r'src="https://email\.example\.com/o/[a-z0-9]+"', html), html
    r = await client.put("/v3/domains/example.com", data={"web_scheme": ""})
    assert r.json()["domain"]["web_scheme"] == "http"  # as the tracking URL says
    r = await client.post("/v3/domains", data={"name": "s.example", "web_scheme": "https"})
    assert r.status_code == 200, r.text
    assert r.json()["domain"]["web_scheme"] == "https"
    r = await client.post("/v3/domains", data={"name": "t.example", "web_scheme": "gopher"})
    assert r.status_code == 400
    assert (await client.get("/v3/domains/t.example")).status_code == 404


async def test_https_tracking_hosts_send_hsts(hosted: Service, smtp_relay: SmtpRelay) -> None:
    await hosted.client.put("/v3/domains/example.com", data={"web_scheme": "https"})
    await hosted.send(to="alice@example.org", subject="x",
                      html='<a href="https://shop.example.net/">x</a>')
    (received,) = await smtp_relay.wait_for(1)
    click = re.findall(r'href="(https://[^"]+/c/[a-z0-9]+)"', received.part("text/html"))[0]
    (pixel,) = re.findall(r'src="(https://[^"]+/o/[a-z0-9]+)"', received.part("text/html"))
    await hosted.app.hosts.reload()  # the front reads the snapshot it holds
    for host in ("email.example.com", "EMAIL.example.com.:443"):
        for url in (click, pixel):  # the tracking front, straight from the socket
            r = await hosted.hit(url, headers={"host": host})
            assert r.headers["strict-transport-security"] == "max-age=31536000", (host, url)
    r = await hosted.hit(pixel.replace("/o/", "/u/"), headers={"host": "email.example.com"})
    assert r.headers["strict-transport-security"] == "max-age=31536000"  # through ASGI
    for host in ("links.xn--bcher-kva.example", "mb.example.net", "127.0.0.1"):
        r = await hosted.hit(click, headers={"host": host})
        assert r.status_code == 302
        assert "strict-transport-security" not in r.headers

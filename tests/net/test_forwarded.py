"""X-Forwarded-For from a trusted proxy names the client only when it is an IP address
(issue 12.5): never stored raw as an event's `ip`, on the tracking front and under
uvicorn alike."""

from __future__ import annotations

import re

import pytest
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from mailbeacon.net.forwarded import client_address, ip_address
from tests.support import Service, SmtpRelay
from tests.track.test_front import request, wire

HTML = '<html><body><a href="https://shop.example.net/a">a</a></body></html>'
BAD = ("<img src=x onerror=alert(1)>", "fe80::1%<b>", "999.1.1.1", "unknown", "_hidden",
       "81.2.69.142 <x>")


@pytest.mark.parametrize("text", BAD)
def test_not_ip_addresses(text: str) -> None:
    assert ip_address(text) is None


@pytest.mark.parametrize("forwarded", [*BAD, "<img>, 10.0.0.1"])
def test_a_named_client_that_is_no_address_leaves_the_peer(forwarded: str) -> None:
    trusted = ProxyHeadersMiddleware(lambda *a: None, "127.0.0.1, 10.0.0.1").trusted_hosts
    assert client_address(trusted, "127.0.0.1", forwarded) == "127.0.0.1"
    assert client_address(trusted, "127.0.0.1", "81.2.69.142, 10.0.0.1") == "81.2.69.142"
    assert client_address(trusted, "127.0.0.1", "2a00:1450::1") == "2a00:1450::1"


async def test_events_keep_only_an_address(service: Service, smtp_relay: SmtpRelay) -> None:
    await service.send(to="alice@example.org", subject="x", html=HTML)
    (received,) = await smtp_relay.wait_for(1)
    (pixel,) = re.findall(r'src="http://[^"]+(/o/[a-z0-9]+)"', received.part("text/html"))
    await service.start_http()

    async def last_ip() -> str:
        return str((await service.events(event="opened"))[0]["ip"])

    async with wire(service.port) as client:  # 127.0.0.1: a trusted proxy by default
        for forwarded in (*BAD, "81.2.69.142"):
            r = await client.ask(request(pixel, headers=(("X-Forwarded-For", forwarded),)))
            assert r.status == 200 and r.header("server") is None  # the front's
            wanted = "81.2.69.142" if forwarded == "81.2.69.142" else "127.0.0.1"
            assert await last_ip() == wanted, forwarded
        assert (await client.ask(request("/v3/domains"))).status == 401  # now uvicorn's
        for forwarded in (*BAD, "81.2.69.142"):
            r = await client.ask(request(pixel, headers=(("X-Forwarded-For", forwarded),)))
            assert r.status == 200 and r.header("server") == "uvicorn"
            wanted = "81.2.69.142" if forwarded == "81.2.69.142" else "127.0.0.1"
            assert await last_ip() == wanted, forwarded

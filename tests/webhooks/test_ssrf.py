"""Webhook posts cannot read or reach private services when that is forbidden (issue 12.3)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from mailbeacon.webhooks import outgoing
from mailbeacon.webhooks.outgoing import is_public, post
from mailbeacon.webhooks.sender import WebhookSender
from tests.support import Service

BASE = "/v3/domains/example.com/webhooks"
SECRET = "internal-secret-3141"


class LocalService:
    """An internal HTTP service on 127.0.0.1 that must stay out of reach: it answers
    every request with a secret (or `redirect` as a 302), and counts the requests."""

    def __init__(self, body: str = SECRET, redirect: str = "") -> None:
        self.requests: list[dict[str, str]] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                self.rfile.read(int(self.headers.get("content-length", 0)))
                service.requests.append(dict(self.headers))
                self.send_response(302 if redirect else 200)
                if redirect:
                    self.send_header("Location", redirect)
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def local() -> Iterator[LocalService]:
    found = LocalService()
    yield found
    found.stop()


@pytest.fixture
async def guarded(service_factory: Any) -> AsyncIterator[Service]:
    async with service_factory(run_worker=False, webhook_forbid_private=True) as svc:
        await svc.add_domain("example.com")
        yield svc


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
    "::1", "::", "fd00::1", "fe80::1", "fe80::1%lo", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
    "::127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::1", "224.0.0.1", "ff02::1",
])
def test_private_addresses(address: str) -> None:
    assert not is_public(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1::1",
                                     "::ffff:93.184.216.34", "64:ff9b::5db8:d822"])
def test_public_addresses(address: str) -> None:
    assert is_public(address)


async def test_test_endpoint_obeys_forbid_private(guarded: Service,
                                                  local: LocalService) -> None:
    for host in ("127.0.0.1", "[::ffff:127.0.0.1]", "localhost", "2130706433", "[::1]"):
        url = f"http://{host}:{local.port}/admin"
        r = await guarded.client.post(f"{BASE}/test", data={"url": url})
        assert r.status_code == 200, r.text
        found = r.json()
        assert found["code"] is None and found["body"] is None, (host, found)
        assert found["outcome"] == "retry" and "private" in found["message"], found
        assert SECRET not in r.text
    assert local.requests == []


async def test_stored_webhooks_obey_forbid_private(guarded: Service,
                                                   local: LocalService) -> None:
    r = await guarded.client.post(BASE, data={
        "id": "accepted", "url": [f"http://[::ffff:127.0.0.1]:{local.port}/a",
                                  f"http://localhost:{local.port}/b"]})
    assert r.status_code == 200
    await guarded.send(to="alice@example.org", subject="x", text="y")
    sender = WebhookSender(guarded.runtime.db, forbid_private=True)
    assert await sender.run_once() == 2
    items = (await guarded.client.get(f"{BASE}/deliveries")).json()["items"]
    assert [i["last-error"] for i in items] == [
        "refused: the URL's host is a private address"] * 2
    assert local.requests == []


async def test_test_endpoint_shows_a_short_body_where_private_is_allowed(
        service: Service) -> None:
    long_answer = LocalService(body="z" * 5000)
    try:
        r = await service.client.post(f"{BASE}/test", data={
            "url": f"http://127.0.0.1:{long_answer.port}/hook"})
        found = r.json()
        assert found["code"] == 200 and found["outcome"] == "done"
        assert found["body"] == "z" * 500 and found["body-truncated"] is True
    finally:
        long_answer.stop()


async def test_redirects_are_not_followed(service: Service, local: LocalService) -> None:
    redirecting = LocalService(redirect=f"http://127.0.0.1:{local.port}/admin")
    try:
        r = await service.client.post(f"{BASE}/test", data={
            "url": f"http://127.0.0.1:{redirecting.port}/hook"})
        assert r.json()["code"] == 302 and r.json()["outcome"] == "retry"
        assert len(redirecting.requests) == 1 and local.requests == []
    finally:
        redirecting.stop()


async def test_the_connection_goes_to_the_checked_address(
        local: LocalService, monkeypatch: pytest.MonkeyPatch) -> None:
    """A name is resolved once, checked, and that address is connected to (with the
    name as Host): a second lookup that answered otherwise (DNS rebinding) is never
    made. `rebind.test` does not resolve at all outside this test's resolver."""
    lookups: list[str] = []
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo

    async def resolver(host: Any, port: Any, **kwargs: Any) -> Any:
        if host == "rebind.test":
            lookups.append(host)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return await real(host, port, **kwargs)

    monkeypatch.setattr(loop, "getaddrinfo", resolver)
    monkeypatch.setattr(outgoing, "is_public", lambda address: address == "127.0.0.1")
    async with httpx.AsyncClient(trust_env=False) as client:
        answer = await post(client, f"http://rebind.test:{local.port}/hook", {"x": 1},
                            "key-x", timeout=5.0, forbid_private=True)
    assert answer.code == 200
    assert lookups == ["rebind.test"]
    (headers,) = local.requests
    assert headers["Host"] == f"rebind.test:{local.port}"

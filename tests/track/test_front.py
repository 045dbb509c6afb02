"""The tracking front (track/front.py) over real loopback sockets: what it answers is
what the ASGI route answers, keep-alive, pipelining, hand-off to uvicorn, closing, proxy
headers, journal mode, database outages and graceful shutdown."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import resource
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa

from mailbeacon.net.connections import FD_RESERVE, Limits, fit_descriptors
from mailbeacon.track.endpoints import PIXEL
from tests.support import (
    API_KEY,
    Service,
    SmtpRelay,
    count_events,
    database_held,
    serving,
    start_server,
)

HTML = '<html><body><a href="https://shop.example.net/a?x=1&amp;y=2">a</a></body></html>'
LOCATION = "https://shop.example.net/a?x=1&y=2"
AUTH = "Basic " + base64.b64encode(f"api:{API_KEY}".encode()).decode()
# The protocol is the same whatever the database: most tests run on SQLite alone; those
# about what is recorded run on both.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
async def service(service: Service) -> Service:
    """conftest's service, with its real server started at once (these tests talk to its
    port before any hit)."""
    await service.start_http()
    return service
TIMEOUT = 10.0  # no read in these tests waits longer (but for the database outage)


# --- a raw HTTP/1.1 client ---------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]  # names lowercased, in order
    body: bytes

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n == name]
        assert len(values) <= 1, (name, values)
        return values[0] if values else None

    def comparable(self) -> tuple[int, list[tuple[str, str]], bytes]:
        """Status, headers without date and server (sorted), body."""
        return self.status, sorted(h for h in self.headers if h[0] not in ("date", "server")), \
            self.body


def request(target: str, method: str = "GET", headers: tuple[tuple[str, str], ...] = (),
            version: str = "1.1", body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/{version}", "Host: 127.0.0.1:8080",
             *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Wire:
    """One client connection, byte for byte (asyncio streams: the server runs on this
    test's loop, so blocking sockets would stall it)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.timeout = TIMEOUT

    @classmethod
    async def open(cls, port: int) -> Wire:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def _line(self) -> bytes:
        line = await asyncio.wait_for(self.reader.readline(), self.timeout)
        if not line.endswith(b"\r\n"):
            raise ConnectionError(f"connection closed mid-response: {line!r}")
        return line[:-2]

    async def reply(self, head_only: bool = False) -> Reply:
        """The next response: status line, headers, a content-length (or chunked) body."""
        status_line = await self._line()
        match = re.fullmatch(rb"HTTP/1\.[01] (\d{3}) [^\r\n]*", status_line)
        assert match, f"not a status line: {status_line!r}"
        headers = []
        while line := await self._line():
            name, sep, value = line.partition(b":")
            assert sep, f"not a header: {line!r}"
            headers.append((name.decode().lower(), value.strip().decode("latin-1")))
        reply = Reply(int(match[1]), headers, b"")
        if head_only or reply.status in (204, 304):
            return reply
        if reply.header("transfer-encoding") == "chunked":
            body = b""
            while size := int(await self._line(), 16):
                body += await asyncio.wait_for(self.reader.readexactly(size + 2),
                                               self.timeout)
                body = body[:-2]
            await self._line()
            reply.body = body
        else:
            length = reply.header("content-length")
            assert length is not None, headers
            reply.body = await asyncio.wait_for(self.reader.readexactly(int(length)),
                                                self.timeout)
        return reply

    async def ask(self, data: bytes, head_only: bool = False) -> Reply:
        self.send(data)
        return await self.reply(head_only)

    async def closed(self, timeout: float = 3.0) -> bool:
        """True once the server has closed the connection (EOF) with nothing more sent."""
        try:
            rest = await asyncio.wait_for(self.reader.read(), timeout)
        except (ConnectionResetError, BrokenPipeError):
            return True
        assert rest == b"", f"more bytes after the last answer: {rest[:200]!r}"
        return True

    async def quiet(self, seconds: float = 0.2) -> bool:
        """True when nothing arrives (and the connection stays open) for `seconds`."""
        try:
            data = await asyncio.wait_for(self.reader.read(1), seconds)
        except TimeoutError:
            return True
        raise AssertionError(f"unexpected {'bytes' if data else 'close'}: {data!r}")

    def close(self) -> None:
        self.writer.close()


@contextlib.asynccontextmanager
async def wire(port: int) -> AsyncIterator[Wire]:
    connection = await Wire.open(port)
    try:
        yield connection
    finally:
        connection.close()


# --- helpers ---------------------------------------------------------------------------


def _token(url: str) -> str:
    return url.rsplit("/", 1)[1]


async def _sent(service: Service, relay: SmtpRelay) -> tuple[str, str]:
    """A message sent to alice: the click token of its link and its open token."""
    before = len(relay.received)
    await service.send(to="alice@example.org", subject="x", html=HTML)
    received = await relay.wait_for(before + 1)
    await service.wait_events(1, event="delivered")
    html = received[before].part("text/html")
    (link,) = re.findall(r'href="(http://[^"]+/c/[a-z0-9]+)">', html)
    (pixel,) = re.findall(r'src="(http://[^"]+/o/[a-z0-9]+)"', html)
    return _token(link), _token(pixel)


def _count(service: Service, event: str) -> int:
    return count_events(service.runtime.db, event)


def _counts(service: Service) -> tuple[int, int]:
    return _count(service, "opened"), _count(service, "clicked")


async def _until(value: Any, wanted: Any, timeout: float = 10.0) -> None:
    """Wait until `value()` is `wanted`."""
    deadline = time.monotonic() + timeout
    while (got := value()) != wanted:
        if time.monotonic() > deadline:
            raise AssertionError(f"{wanted} not reached in {timeout} s: {got}")
        await asyncio.sleep(0.05)


def _app(service: Service) -> Any:
    """The MailbeaconApp the service's server runs (for further servers on it)."""
    return service.app


# --- the front answers what the ASGI route answers ---------------------------------------


async def test_same_answers_as_the_asgi_route(service: Service, smtp_relay: SmtpRelay) -> None:
    click, pixel = await _sent(service, smtp_relay)
    forged = click[:-5] + ("a" if click[-5] != "a" else "b") + click[-4:]
    # target, status, opens and clicks each GET (and each HEAD) records, front or not
    cases = [
        (f"/o/{pixel}", 200, 1, 0, True),  # first: a click after an open implies none
        (f"/c/{click}", 302, 0, 1, True),
        (f"/c/{forged}", 404, 0, 0, True),
        (f"/c/{click[:20]}", 404, 0, 0, True),
        (f"/o/{click}", 200, 0, 0, True),  # a click token is no open token
        (f"/c/{pixel}", 404, 0, 0, True),  # nor the other way round
        (f"/o/{pixel}.gif?utm_source=mail&x=1", 200, 1, 0, True),
        (f"/c/{click}?utm_source=mail", 302, 0, 1, True),
        (f"/o/{pixel.upper()}", 200, 1, 0, True),
        ("/o/" + "".join(f"%{ord(c):02x}" for c in pixel[:5]) + pixel[5:], 200, 1, 0, True),
        ("/c/" + "".join(f"%{ord(c):02X}" for c in click[:5]) + click[5:], 302, 0, 1, True),
        (f"/%63/{click}", 302, 0, 1, False),  # not `GET /c/`: uvicorn's, then the app's
    ]
    for target, status, opens, clicks, by_front in cases:
        answers = {}
        for method in ("HEAD", "GET"):
            async with wire(service.port) as front:
                before = _counts(service)
                got = await front.ask(request(target, method), head_only=method == "HEAD")
                after = _counts(service)
                assert (after[0] - before[0], after[1] - before[1]) == (opens, clicks), \
                    (method, target)
                # Nothing more than the answer (a HEAD with a body would show here).
                assert await front.quiet(0.05)
            r = await service.client.request(method, target, auth=None)
            assert _counts(service) == (after[0] + opens, after[1] + clicks), (method, target)
            asgi = Reply(r.status_code, [(n.decode(), v.decode()) for n, v in r.headers.raw],
                         r.content)
            assert got.comparable() == asgi.comparable(), (method, target)
            assert got.status == status, (method, target)
            assert (got.header("server") is None) is by_front, (method, target)  # uvicorn's
            answers[method] = got
        head, get = answers["HEAD"], answers["GET"]
        assert head.body == b""  # and nothing after the head either (quiet above)
        assert [h for h in head.headers if h[0] != "date"] == \
            [h for h in get.headers if h[0] != "date"]  # content-length included
        assert get.header("content-length") == str(len(get.body))
        if status == 200:
            assert get.body == PIXEL and get.header("content-type") == "image/gif"
            assert "no-store" in (get.header("cache-control") or "")
        elif status == 302:
            assert get.header("location") == LOCATION and get.body == b""
            assert get.header("referrer-policy") == "no-referrer"
            assert "no-store" in (get.header("cache-control") or "")
            assert get.header("pragma") == "no-cache" and get.header("expires") == "0"
        else:
            assert get.header("location") is None
            assert "text/html" in (get.header("content-type") or "")
            assert b"Link not found" in get.body
    opened = await service.events(event="opened")
    assert {e["method"] for e in opened} == {"GET", "HEAD"}
    assert all(e["ip"] == "127.0.0.1" and e["recipient"] == "alice@example.org" for e in opened)
    (clicked, *_) = await service.events(event="clicked")
    assert clicked["url"] == LOCATION


# --- keep-alive, pipelining, bursts ------------------------------------------------------


@SQLITE_ONLY
async def test_keep_alive_then_the_api_on_the_same_connection(service: Service,
                                                              smtp_relay: SmtpRelay) -> None:
    _, pixel = await _sent(service, smtp_relay)
    async with wire(service.port) as client:
        for n in range(50):
            r = await client.ask(request(f"/o/{pixel}", headers=(("User-Agent", f"n{n}"),)))
            assert (r.status, r.body, r.header("connection")) == (200, PIXEL, None), n
        assert _count(service, "opened") == 50
        r = await client.ask(request("/v3/domains", headers=(("Authorization", AUTH),)))
        assert r.status == 200 and r.header("content-type") == "application/json"
        assert [d["name"] for d in json.loads(r.body)["items"]] == ["example.com"]
        # The connection is uvicorn's now; tracking still answers, through the app.
        r = await client.ask(request(f"/o/{pixel}"))
        assert (r.status, r.body, r.header("server")) == (200, PIXEL, "uvicorn")
        r = await client.ask(request("/v3/domains"))  # and the API still checks its key
        assert r.status == 401
    assert _count(service, "opened") == 51
    agents = {e["client-info"]["user-agent"] for e in await service.events(event="opened")}
    assert {f"n{n}" for n in range(50)} <= agents


@SQLITE_ONLY
async def test_pipelined_requests_answered_in_order(service: Service,
                                                    smtp_relay: SmtpRelay) -> None:
    click, pixel = await _sent(service, smtp_relay)
    async with wire(service.port) as client:
        client.send(request(f"/o/{pixel}") + request(f"/c/{click}")
                    + request("/v3/domains", headers=(("Authorization", AUTH),))
                    + request(f"/o/{pixel}.gif"))
        first, second, third, fourth = [await client.reply() for _ in range(4)]
        assert (first.status, first.body) == (200, PIXEL)
        assert (second.status, second.header("location")) == (302, LOCATION)
        assert third.status == 200 and json.loads(third.body)["total_count"] == 1
        assert (fourth.status, fourth.body) == (200, PIXEL)
        assert await client.quiet(0.1)
    assert _counts(service) == (2, 1)


async def test_burst_of_pipelined_pixels(service: Service, smtp_relay: SmtpRelay) -> None:
    _, pixel = await _sent(service, smtp_relay)
    recorder = service.runtime.recorder
    before = recorder.batches
    async with wire(service.port) as client:
        client.send(b"".join(request(f"/o/{pixel}", headers=(("User-Agent", f"b{n}"),))
                             for n in range(300)))
        replies = [await client.reply() for _ in range(300)]
        assert all((r.status, r.body) == (200, PIXEL) for r in replies)
        assert await client.quiet(0.1)
        assert _count(service, "opened") == 300
        # At most 64 answers wait per connection: the front read the burst in 5 parts or
        # more, each its own commit (unpaused, all 300 would be one batch).
        assert recorder.batches - before >= 5
        # Reading resumed after the pause at 64 waiting answers: the connection serves on.
        assert (await client.ask(request(f"/o/{pixel}"))).status == 200
    assert _count(service, "opened") == 301


# --- what the front hands to uvicorn ----------------------------------------------------


@SQLITE_ONLY
async def test_post_is_the_apps_405(service: Service, smtp_relay: SmtpRelay) -> None:
    click, pixel = await _sent(service, smtp_relay)
    for target in (f"/o/{pixel}", f"/c/{click}"):
        async with wire(service.port) as client:
            r = await client.ask(request(target, "POST", (("Content-Length", "2"),), body=b"{}"))
            assert (r.status, r.header("allow")) == (405, "GET, HEAD")
            assert (await client.ask(request(f"/o/{click}"))).status == 200  # served on
    assert _counts(service) == (0, 0)


@SQLITE_ONLY
async def test_request_with_a_body(service: Service, smtp_relay: SmtpRelay) -> None:
    _, pixel = await _sent(service, smtp_relay)
    async with wire(service.port) as client:
        client.send(request(f"/o/{pixel}", headers=(("Content-Length", "5"),), body=b"hello")
                    + request(f"/o/{pixel}"))
        first, second = await client.reply(), await client.reply()
        assert (first.status, first.body) == (200, PIXEL)
        assert (second.status, second.body) == (200, PIXEL)  # the body was not a request
    assert _count(service, "opened") == 2


@SQLITE_ONLY
async def test_upgrade_requests_are_uvicorns(service: Service, smtp_relay: SmtpRelay) -> None:
    """An upgrade is uvicorn's to refuse (it answers the request as a plain one): answered
    once and recorded once, not by both."""
    _, pixel = await _sent(service, smtp_relay)
    async with wire(service.port) as client:
        r = await client.ask(request(f"/o/{pixel}", headers=(("Connection", "Upgrade"),
                                                             ("Upgrade", "h2c"))))
        assert (r.status, r.body, r.header("server")) == (200, PIXEL, "uvicorn")
        assert await client.quiet(0.2)
    assert _count(service, "opened") == 1


@SQLITE_ONLY
async def test_malformed_heads_get_uvicorns_400(service: Service, smtp_relay: SmtpRelay) -> None:
    _, pixel = await _sent(service, smtp_relay)
    for bad in (f"GET /o/{pixel} HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n".encode(),
                f"GET /o/{pixel} HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n".encode(),
                f"GET /c/{pixel} HTTP/7.3\r\n\r\n".encode()):
        async with wire(service.port) as client:
            r = await client.ask(bad)
            assert (r.status, r.body) == (400, b"Invalid HTTP request received."), bad
            assert r.header("connection") == "close"
            assert await client.closed()
    assert _count(service, "opened") == 0


@SQLITE_ONLY
async def test_huge_heads(service: Service, smtp_relay: SmtpRelay) -> None:
    """A head still unfinished past 16 KiB is uvicorn's (it answers as it would without
    the front); one that comes whole is answered either way; a megabyte of head breaks
    nothing, and the server goes on serving."""
    _, pixel = await _sent(service, smtp_relay)
    padding = "a" * (20 * 1024)
    head = request(f"/o/{pixel}", headers=(("X-Padding", padding),))
    async with wire(service.port) as slow, wire(service.port) as whole:
        slow.send(head[:17 * 1024])  # no end of head yet, and already past 16 KiB
        await asyncio.sleep(0.1)
        slow.send(head[17 * 1024:])
        r = await slow.reply()
        assert (r.status, r.body, r.header("server")) == (200, PIXEL, "uvicorn")
        r = await whole.ask(head)
        assert (r.status, r.body) == (200, PIXEL)
    async with wire(service.port) as client:  # a megabyte of head, never finished
        client.send(f"GET /o/{pixel} HTTP/1.1\r\nX-Padding: ".encode() + b"a" * 2**20)
        await asyncio.sleep(0.2)
    async with wire(service.port) as other:
        assert (await other.ask(request(f"/o/{pixel}"))).status == 200
    assert _count(service, "opened") == 3


# --- closing ------------------------------------------------------------------------------


async def _closes_after_one(service: Service, first: bytes, status: int, pixel: str) -> None:
    """`first` and a pixel after it in one send: `first` is answered, with `connection:
    close`, then the connection closes (the pipelined pixel is neither answered nor
    recorded)."""
    async with wire(service.port) as client:
        client.send(first + request(f"/o/{pixel}"))
        r = await client.reply()
        assert (r.status, r.header("connection")) == (status, "close"), first
        assert await client.closed(), first


@SQLITE_ONLY
async def test_http_10_closes_after_the_answer(service: Service, smtp_relay: SmtpRelay) -> None:
    click, pixel = await _sent(service, smtp_relay)
    for data, status in ((request(f"/o/{pixel}", version="1.0"), 200),
                         (request(f"/c/{click}", version="1.0"), 302),
                         (request(f"/c/{click[:10]}", version="1.0"), 404)):
        await _closes_after_one(service, data, status, pixel)
    assert _counts(service) == (1, 1)


@SQLITE_ONLY
async def test_connection_close_closes_after_the_answer(service: Service,
                                                        smtp_relay: SmtpRelay) -> None:
    click, pixel = await _sent(service, smtp_relay)
    close = (("Connection", "close"),)
    for data, status in ((request(f"/o/{pixel}", headers=close), 200),
                         (request(f"/c/{click}", headers=close), 302),
                         (request(f"/c/{click[:10]}", headers=close), 404)):
        await _closes_after_one(service, data, status, pixel)
    assert _counts(service) == (1, 1)


@SQLITE_ONLY
async def test_http_10_keep_alive_is_confirmed_or_closed(service: Service,
                                                         smtp_relay: SmtpRelay) -> None:
    """An HTTP/1.0 client asking for keep-alive takes the connection as closing unless
    the answer says `Connection: keep-alive`: the server must say so, or close."""
    _, pixel = await _sent(service, smtp_relay)
    async with wire(service.port) as client:
        r = await client.ask(request(f"/o/{pixel}", headers=(("Connection", "keep-alive"),),
                                     version="1.0"))
        assert r.status == 200
        if (r.header("connection") or "").lower() != "keep-alive":
            assert await client.closed(0.5), "neither confirmed nor closed"


@SQLITE_ONLY
async def test_idle_connections_close(service: Service, smtp_relay: SmtpRelay) -> None:
    _, pixel = await _sent(service, smtp_relay)
    async with serving(_app(service), timeout_keep_alive=1) as http:
        port = http.config.port
        async with wire(port) as used, wire(port) as unused:
            assert (await used.ask(request(f"/o/{pixel}"))).status == 200
            start = time.monotonic()
            assert await used.quiet(0.7)  # open for a while yet
            assert await used.closed(3.0) and await unused.closed(3.0)
            assert 0.8 < time.monotonic() - start < 3.0
        async with wire(port) as busy:  # a request every half second keeps it open
            for _ in range(3):
                assert (await busy.ask(request(f"/o/{pixel}"))).status == 200
                await asyncio.sleep(0.5)


@SQLITE_ONLY
async def test_keep_alive_counts_from_the_answer(service: Service,
                                                 smtp_relay: SmtpRelay) -> None:
    """An answer that waited for its commit longer than the keep-alive timeout: the
    connection still stays open for the timeout after it, as uvicorn's does."""
    _, pixel = await _sent(service, smtp_relay)
    async with serving(_app(service), timeout_keep_alive=1) as http, \
            wire(http.config.port) as client:
        with database_held(service.runtime.db) as release:
            client.send(request(f"/o/{pixel}"))
            await asyncio.sleep(1.5)
            release.set()
            assert (await client.reply()).status == 200
        await asyncio.sleep(0.3)  # well within the keep-alive timeout of the answer
        r = await client.ask(request(f"/o/{pixel}"))
        assert r.status == 200
    assert _count(service, "opened") == 2


# --- proxies --------------------------------------------------------------------------------


@SQLITE_ONLY
async def test_forwarded_for_from_a_trusted_proxy(service: Service,
                                                  smtp_relay: SmtpRelay) -> None:
    click, pixel = await _sent(service, smtp_relay)
    async with wire(service.port) as client:
        for forwarded in (("81.2.69.142",), ("81.2.69.142, 127.0.0.1",),
                          ("10.1.1.1", "81.2.69.142")):  # two headers: the last proxy's
            r = await client.ask(request(f"/o/{pixel}", headers=tuple(
                ("X-Forwarded-For", value) for value in forwarded)))
            assert r.status == 200
            assert (await service.events(event="opened"))[0]["ip"] == "81.2.69.142", forwarded
        r = await client.ask(request(f"/c/{click}", headers=(("X-Forwarded-For", "81.2.69.142"),)))
        assert r.status == 302
    (clicked,) = await service.events(event="clicked")
    assert clicked["ip"] == "81.2.69.142" and clicked["geolocation"]["country"] == "GB"


async def _addresses(service: Service, pixel: str, **options: Any) -> tuple[str, str]:
    """The ip of a pixel forwarded for 81.2.69.142 by the peer 127.0.0.1, as the front
    takes it and as the app under uvicorn does (its proxy headers middleware), on a
    server started with `options`."""
    forwarded = (("X-Forwarded-For", "81.2.69.142"),)
    async with serving(_app(service), **options) as http, wire(http.config.port) as client:
        r = await client.ask(request(f"/o/{pixel}", headers=forwarded))
        assert r.status == 200 and r.header("server") is None  # the front's
        by_front = (await service.events(event="opened"))[0]["ip"]
        assert (await client.ask(request("/v3/domains"))).status == 401  # to uvicorn
        r = await client.ask(request(f"/o/{pixel}", headers=forwarded))
        assert r.status == 200 and r.header("server") == "uvicorn"
        by_app = (await service.events(event="opened"))[0]["ip"]
    return str(by_front), str(by_app)


@SQLITE_ONLY
async def test_forwarded_for_from_an_untrusted_peer(service: Service,
                                                    smtp_relay: SmtpRelay) -> None:
    _, pixel = await _sent(service, smtp_relay)
    untrusted = await _addresses(service, pixel, forwarded_allow_ips="10.9.9.9")
    assert untrusted == ("127.0.0.1", "127.0.0.1")  # the header is ignored
    assert await _addresses(service, pixel, forwarded_allow_ips="*") == \
        ("81.2.69.142", "81.2.69.142")
    assert await _addresses(service, pixel, proxy_headers=False) == ("127.0.0.1", "127.0.0.1")


@SQLITE_ONLY
async def test_forwarded_allow_ips_empty_trusts_nobody(service: Service,
                                                       smtp_relay: SmtpRelay) -> None:
    """forwarded_allow_ips="" (FORWARDED_ALLOW_IPS= in the environment) trusts no peer in
    uvicorn; the front must not fall back to trusting 127.0.0.1."""
    _, pixel = await _sent(service, smtp_relay)
    by_front, by_app = await _addresses(service, pixel, forwarded_allow_ips="")
    assert by_app == "127.0.0.1"
    assert by_front == by_app


# --- recording ----------------------------------------------------------------------------


@SQLITE_ONLY
async def test_journal_mode(service_factory: Any, smtp_relay: SmtpRelay) -> None:
    async with service_factory(relay=smtp_relay.url, recording="journal") as service:
        await service.add_domain()
        await service.start_http()
        click, pixel = await _sent(service, smtp_relay)
        async with wire(service.port) as one, wire(service.port) as two:
            one.send(request(f"/o/{pixel}") * 100)
            two.send(request(f"/c/{click}") * 20)
            assert [(await one.reply()).status for _ in range(100)] == [200] * 100
            assert [(await two.reply()).status for _ in range(20)] == [302] * 20
        await _until(lambda: _counts(service), (100, 20), timeout=30)  # a process loads
        await asyncio.sleep(0.3)
        assert _counts(service) == (100, 20)


@SQLITE_ONLY
async def test_database_unreachable(service: Service, smtp_relay: SmtpRelay,
                                    database_url: str) -> None:
    click, pixel = await _sent(service, smtp_relay)
    release, locked = threading.Event(), threading.Event()

    def hold() -> None:
        engine = sa.create_engine(database_url, connect_args={"timeout": 1})
        with engine.connect() as conn:
            conn.exec_driver_sql("BEGIN EXCLUSIVE")  # nobody else may write, or read
            locked.set()
            release.wait(60)
            conn.exec_driver_sql("ROLLBACK")
        engine.dispose()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert locked.wait(5)
        wires = [await Wire.open(service.port) for _ in range(4)]
        for n, client in enumerate(wires):
            client.timeout = 30  # the first commit waits out SQLite's busy timeout (10 s)
            client.send(request(f"/o/{pixel}") * 5 + request(f"/c/{click}") * (n + 1))
        for n, client in enumerate(wires):
            assert [(await client.reply()).status for _ in range(6 + n)] \
                == [200] * 5 + [302] * (n + 1)
            client.close()
        assert service.runtime.recorder.spooled == 30
    finally:
        release.set()
        holder.join()
    await _until(lambda: _counts(service), (20, 10), timeout=15)
    await asyncio.sleep(1.5)  # the spool's next replay: nothing twice
    assert _counts(service) == (20, 10)


async def test_graceful_shutdown_answers_hits_in_flight(service: Service,
                                                        smtp_relay: SmtpRelay) -> None:
    click, pixel = await _sent(service, smtp_relay)
    http, task = await start_server(_app(service))
    try:
        wires = [await Wire.open(http.config.port) for _ in range(5)]
        with database_held(service.runtime.db) as release:
            for client in wires:
                client.send(request(f"/o/{pixel}") * 3 + request(f"/c/{click}"))
            await asyncio.sleep(0.3)  # all received, all waiting for their commit
            assert not any(wire.reader.at_eof() for wire in wires)
            http.should_exit = True
            await asyncio.sleep(0.3)  # uvicorn has asked every connection to finish
            assert not task.done()  # it waits for the answers under way
            release.set()
            answered = [[(await client.reply()).status for _ in range(4)] for client in wires]
        assert answered == [[200, 200, 200, 302]] * 5
        for client in wires:
            assert await client.closed()
            client.close()
        await asyncio.wait_for(task, 10)
    finally:
        http.should_exit = True
        await asyncio.wait_for(task, 30)
    assert _counts(service) == (15, 5)


# --- hand-off bookkeeping ---------------------------------------------------------------------


@SQLITE_ONLY
async def test_connection_handed_off_once(service: Service, smtp_relay: SmtpRelay) -> None:
    """Two hits of one batch with an answer between them that waits for nothing (a bad
    token), then the API: uvicorn's protocol must take the connection once. A second
    hand-off leaves a first protocol behind that still holds the transport: its
    keep-alive timer closes the connection in use, and, never told the connection is
    lost, it stays in the server's connections, so graceful shutdown waits forever."""
    _, pixel = await _sent(service, smtp_relay)
    http, task = await start_server(_app(service), timeout_keep_alive=1)
    try:
        async with wire(http.config.port) as client:
            client.send(request(f"/o/{pixel}") + request("/o/zzzz") + request(f"/o/{pixel}")
                        + request("/v3/domains", headers=(("Authorization", AUTH),)))
            assert [(await client.reply()).status for _ in range(4)] == [200] * 4
            assert len(http.server_state.connections) == 1
            for _ in range(5):  # in use for longer than the keep-alive timeout: stays open
                r = await client.ask(request("/v3/domains", headers=(("Authorization", AUTH),)))
                assert r.status == 200
                await asyncio.sleep(0.3)
        await _until(lambda: len(http.server_state.connections), 0, timeout=3)
        http.should_exit = True
        await asyncio.wait_for(task, 5)
    finally:
        http.should_exit = True
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert _count(service, "opened") == 2


# --- connection limits (connections.py) --------------------------------------------------


async def _refused(client: Wire, status: int, within: float) -> Reply:
    """The connection is answered `status` and closed, within `within` seconds."""
    client.timeout = within
    r = await client.reply()
    assert r.status == status and r.header("connection") == "close", r
    assert "message" in json.loads(r.body)
    assert await client.closed(within)
    return r


async def test_half_open_connections_beyond_the_bound_lock_nobody_out(
        service: Service, smtp_relay: SmtpRelay) -> None:
    """More half-open connections than the bound (half in the front, half handed to
    uvicorn), held open: pixels, clicks and the API still answer, on new connections,
    because the connections waiting longest make room; the server never holds more than
    its bound. Before, each was held for ever (1,010 of them took the server down)."""
    click, pixel = await _sent(service, smtp_relay)
    bound = 50
    async with serving(_app(service), limits=Limits(max_connections=bound)) as http:
        port = http.config.port
        held = [await Wire.open(port) for _ in range(2 * bound)]
        try:
            for number, client in enumerate(held):
                target = "/v3/domains" if number % 2 else f"/o/{pixel}"
                client.send(f"GET {target} HTTP/1.1\r\nHost: x\r\n".encode())  # no end
                await asyncio.sleep(0)
            await _until(lambda: len(http.server_state.connections) <= bound, True)
            for _ in range(10):
                async with wire(port) as client:
                    assert (await client.ask(request(f"/o/{pixel}"))).status == 200
                    assert (await client.ask(request(f"/c/{click}"))).status == 302
                    r = await client.ask(request("/v3/domains", headers=(("Authorization", AUTH),)))
                    assert r.status == 200
            assert len(http.server_state.connections) <= bound
            evicted = 0
            for client in held:
                with contextlib.suppress(TimeoutError):
                    evicted += await client.closed(0.05)
            assert evicted >= bound  # the oldest made room, for the others and for us
        finally:
            for client in held:
                client.close()
    assert _counts(service) == (10, 10)


async def test_when_every_connection_is_busy_a_newcomer_gets_503(
        service: Service, smtp_relay: SmtpRelay) -> None:
    """16 connections each waiting for its pixel's commit: the 17th is refused with 503
    at once; the 16 are answered and stored once the database lets go."""
    _, pixel = await _sent(service, smtp_relay)
    async with serving(_app(service), limits=Limits(max_connections=16)) as http:
        port = http.config.port
        busy = [await Wire.open(port) for _ in range(16)]
        try:
            with database_held(service.runtime.db) as release:
                for client in busy:
                    client.send(request(f"/o/{pixel}"))
                await _until(lambda: len(http.server_state.connections), 16)
                await asyncio.sleep(0.2)  # each has its request in
                async with wire(port) as newcomer:
                    r = await _refused(newcomer, 503, 5)
                    assert r.header("retry-after") == "1"
                release.set()
            assert [(await c.reply()).status for c in busy] == [200] * 16
        finally:
            for client in busy:
                client.close()
    assert _count(service, "opened") == 16


@SQLITE_ONLY
async def test_a_request_head_has_a_deadline_before_and_after_the_hand_off(
        service: Service, smtp_relay: SmtpRelay) -> None:
    """Half a head, or a head trickled a byte at a time (never quiet for the keep-alive
    timeout), to the front or to uvicorn: 408 and closed once the head deadline passes,
    counted from the head's first byte."""
    _, pixel = await _sent(service, smtp_relay)
    limits = Limits(head_timeout=1.0)
    async with serving(_app(service), limits=limits, timeout_keep_alive=3) as http:
        port = http.config.port
        for target in (f"/o/{pixel}", "/v3/domains"):
            async with wire(port) as client:
                start = time.monotonic()
                client.send(f"GET {target} HTTP/1.1\r\nHost: x\r\n".encode())
                await _refused(client, 408, 5)
                assert time.monotonic() - start < 5
            async with wire(port) as client:  # a byte every 0.2 s: 8 s for this head
                head = f"GET {target} HTTP/1.1\r\nHost: x\r\nX-Slow: {'a' * 10}\r\n\r\n"

                async def trickle(client: Wire = client, head: str = head) -> None:
                    with contextlib.suppress(ConnectionError):
                        for char in head:
                            client.send(char.encode())
                            await client.writer.drain()
                            await asyncio.sleep(0.2)

                sender = asyncio.create_task(trickle())
                try:
                    await _refused(client, 408, 5)
                finally:
                    sender.cancel()
        async with wire(port) as client:  # the deadline is per head: a slow client is fine
            for _ in range(3):
                client.send(b"GET /o/" + pixel.encode())
                await asyncio.sleep(0.6)
                assert (await client.ask(b" HTTP/1.1\r\nHost: x\r\n\r\n")).status == 200


@SQLITE_ONLY
async def test_a_request_body_has_a_deadline(service: Service, smtp_relay: SmtpRelay) -> None:
    async with serving(_app(service), limits=Limits(body_timeout=1.0)) as http, \
            wire(http.config.port) as client:
        client.send(b"POST /v3/domains HTTP/1.1\r\nHost: x\r\nAuthorization: " + AUTH.encode()
                    + b"\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                    b"Content-Length: 1000\r\n\r\nname=")
        client.timeout = 5
        r = await client.reply()
        assert r.status in (400, 408), r  # the app may answer the truncated form itself
        assert await client.closed(5)


@SQLITE_ONLY
async def test_request_heads_are_capped(service: Service, smtp_relay: SmtpRelay) -> None:
    """A 100 KB header, whole or never finished (100 MB values took 100 MB of memory
    each): 431, before the rest is read; a 20 KB one is still served."""
    _, pixel = await _sent(service, smtp_relay)
    async with serving(_app(service)) as http:
        port = http.config.port
        for target in (f"/o/{pixel}", "/v3/domains"):
            async with wire(port) as client:
                client.send(request(target, headers=(("X-Big", "b" * 100_000),)))
                r = await _refused(client, 431, 5)
                assert "65536" in json.loads(r.body)["message"]
            async with wire(port) as client:
                client.send(f"GET {target} HTTP/1.1\r\nX-Big: ".encode())
                with contextlib.suppress(ConnectionError):
                    for _ in range(200):  # up to 10 MB, while it reads
                        client.send(b"c" * 50_000)
                        await client.writer.drain()
                await _refused(client, 431, 5)
            async with wire(port) as client:
                r = await client.ask(request(target, headers=(
                    ("X-Padding", "p" * 20_000), ("Authorization", AUTH))))
                assert r.status == 200


def test_the_descriptor_limit_is_raised_to_fit_the_bound() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
        assert fit_descriptors(Limits(max_connections=600)).max_connections == 600
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= 600 + FD_RESERVE
        if hard != resource.RLIM_INFINITY:  # more than the hard limit allows: the bound fits
            assert fit_descriptors(Limits(max_connections=hard)).max_connections == \
                hard - FD_RESERVE
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

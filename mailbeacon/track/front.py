"""The HTTP front: opens and clicks answered straight from the socket (DESIGN 3).

uvicorn serves the ASGI application; this protocol takes each new connection first. A
request that starts `GET /o/`, `GET /c/`, `HEAD /o/` or `HEAD /c/` has its head parsed
by httptools (uvicorn's parser), is answered by `track.endpoints.answer`, and its
response is written once the recorder says its hit is durable: no ASGI scope, no task,
no framework layer per hit. At the first other request (the API, the dashboard, a body,
an upgrade, anything malformed) the connection goes to uvicorn's own protocol with every
byte not yet answered, the way uvicorn hands a connection to its WebSocket protocol, and
stays there. Answers go out in request order, pipelined or not.

Every connection starts here, so the connection bound is kept here (connections.py): at
it, the connection waiting longest for a request makes room, or the newcomer gets 503.
A request head has `Limits.head_timeout` to arrive, counted from its first byte, here
and on after the hand-off.

Measured on 2 cores (docs/benchmarks.md): the ASGI route under uvicorn topped out near
12,000 pixels a second; this front serves several times that, journal and all.
"""

from __future__ import annotations

import asyncio
import email.utils
import http
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import unquote

import httptools
from uvicorn.config import Config
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.server import ServerState

from mailbeacon.model.tokens import TokenCodec
from mailbeacon.net.connections import GuardedHttp, Limits, make_room, refusal, refuse
from mailbeacon.net.forwarded import client_address
from mailbeacon.track.endpoints import NOT_FOUND_ANSWER, PIXEL_ANSWER, Answer, answer
from mailbeacon.track.hosts import HSTS_HEADER, TrackingHosts
from mailbeacon.track.recorder import Recorder

log = logging.getLogger("mailbeacon.track")

_TRACKING = (b"GET /o/", b"GET /c/", b"HEAD /o/", b"HEAD /c/")
_LONGEST = max(len(p) for p in _TRACKING)
MAX_HEAD = 16 * 1024  # a longer head is uvicorn's to judge (it answers 4xx)
MAX_WAITING = 64  # answers waiting for their hit per connection; beyond, reading pauses


class _Head:
    """httptools callbacks: what one request says. The parser's own flags are read when
    the message completes: once feed_data returns it has reset them for the next one."""

    __slots__ = ("parser", "url", "headers", "complete", "head_only", "keep_alive")

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = self.head_only = self.keep_alive = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_message_complete(self) -> None:
        self.complete = True
        self.head_only = self.parser.get_method() == b"HEAD"
        # As uvicorn: HTTP/1.0 closes (our answers say HTTP/1.1 and no keep-alive).
        self.keep_alive = self.parser.should_keep_alive() and \
            self.parser.get_http_version() != "1.0"


class _Clock:
    """The Date header, formatted once a second."""

    def __init__(self) -> None:
        self._second = 0
        self._line = b""

    def line(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._line = b"date: " + email.utils.formatdate(now, usegmt=True).encode() + b"\r\n"
        return self._line


class TrackingFront(asyncio.Protocol):
    """One connection. Built by uvicorn with its protocol arguments, plus ours (see
    `protocol_factory`)."""

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None, *, codec: TokenCodec,
                 recorder: Recorder, clock: _Clock, trusted: Any, limits: Limits,
                 hosts: TrackingHosts | None = None) -> None:
        self._config = config
        self._server_state = server_state
        self._app_state = app_state
        self._loop = _loop or asyncio.get_event_loop()
        self._codec = codec
        self._recorder = recorder
        self._clock = clock
        self._trusted = trusted  # uvicorn's trusted proxies; None: X-Forwarded-For ignored
        self._limits = limits
        self._hosts = hosts  # whose tracking hosts answer with HSTS
        self._head_started: float | None = None  # loop time of the unanswered head's start
        self._transport: asyncio.Transport | None = None
        self._peer = ""
        self._buffer = b""
        self._head = _Head()
        self._path = b""
        # Answers in request order, each with the hit it waits for (None: ready).
        self._waiting: deque[tuple[asyncio.Future[None] | None, bytes]] = deque()
        self._closing = False  # close once the waiting answers are written
        self._handing_off = False  # give the connection to uvicorn once they are
        self._handed_off = False
        self._watched: asyncio.Future[None] | None = None  # the last batch waited on
        self._write_paused = False
        self._reading_paused = False
        self._last_active = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        connections = self._server_state.connections
        if len(connections) >= self._limits.max_connections and not make_room(
                connections, self._limits, self._loop.time()):
            _refused_log(len(connections))
            self._closing = True
            self._transport.write(_BUSY)
            self._transport.close()
            return
        connections.add(self)  # type: ignore[arg-type]
        peer = self._transport.get_extra_info("peername")
        self._peer = str(peer[0]) if isinstance(peer, tuple) else ""
        self._touch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._server_state.connections.discard(self)
        self._closing = True
        self._waiting.clear()  # hits still go in; nobody is left to answer
        if self._idle_timer is not None:
            self._idle_timer.cancel()

    def data_received(self, data: bytes) -> None:
        if self._closing and not self._waiting:
            return  # refused, or closing once answered: what follows is never read
        if not self._buffer:
            self._head_started = self._loop.time()
        self._buffer += data
        self._touch()
        self._serve()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._serve()

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: finish the answers under way, then close."""
        self._closing = True
        self._drain()

    # the connection bound (connections.make_room)

    def waiting_since(self) -> float | None:
        """Since when this connection waits for a request; None while answers wait."""
        if self._waiting or self._handing_off:
            return None
        return self._head_started if self._head_started is not None else self._last_active

    def closing(self) -> bool:
        return self._transport is None or self._transport.is_closing()

    def evict(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # the requests

    def _serve(self) -> None:
        transport = self._transport
        assert transport is not None
        if self._handed_off:
            return
        buffer = self._buffer
        while buffer and not self._closing and not self._handing_off:
            if self._write_paused or len(self._waiting) >= MAX_WAITING:
                transport.pause_reading()  # resumed once answers have gone out
                self._reading_paused = True
                break
            if not buffer.startswith(_TRACKING):
                if len(buffer) < _LONGEST and any(p.startswith(buffer) for p in _TRACKING):
                    break  # too little yet to tell
                self._handing_off = True
                break
            end = buffer.find(b"\r\n\r\n")
            if end < 0 or end + 4 > self._limits.max_head_bytes:
                if end >= 0 or len(buffer) > MAX_HEAD:
                    self._handing_off = True  # too long: uvicorn's (431 past the cap)
                break
            head = buffer[:end + 4]
            if not self._parse(head):  # a body, an upgrade, a bad request: uvicorn's
                self._handing_off = True
                break
            buffer = buffer[end + 4:]
            self._head_started = self._loop.time() if buffer else None
            self._answer()
        self._buffer = buffer
        self._drain()

    def _parse(self, head: bytes) -> bool:
        self._head.url, self._head.headers, self._head.complete = b"", [], False
        try:
            self._head.parser.feed_data(head)
            self._path = httptools.parse_url(self._head.url).path
        except (httptools.HttpParserError, httptools.HttpParserUpgrade,
                httptools.HttpParserInvalidURLError):
            return False
        return self._head.complete

    def _answer(self) -> None:
        head = self._head
        method = "HEAD" if head.head_only else "GET"
        path = unquote(self._path.decode("latin-1"))  # as uvicorn gives the ASGI app
        user_agent = forwarded = host = ""
        for name, value in head.headers:
            if name == b"user-agent":
                user_agent = value.decode("latin-1")
            elif name == b"host":
                host = value.decode("latin-1")
            elif name == b"x-forwarded-for":
                forwarded = f"{forwarded}, {value.decode('latin-1')}" if forwarded \
                    else value.decode("latin-1")
        reply, hit = answer(self._codec, method, path, self._client_ip(forwarded), user_agent)
        if self._hosts is not None and self._hosts.hsts(host):
            reply = Answer(reply.status, (*reply.headers, HSTS_HEADER), reply.body)
        data = self._http(reply, head.head_only, head.keep_alive)
        if hit is None:
            self._waiting.append((None, data))
        else:
            future = self._recorder.submit(hit)  # one per batch: wait on it once
            if future is not self._watched:
                self._watched = future
                future.add_done_callback(self._durable)
            self._waiting.append((future, data))
        if not head.keep_alive:
            self._closing = True

    def _client_ip(self, forwarded: str) -> str:
        """The peer, or behind a trusted proxy the client it names (uvicorn's rules, so
        both ways to the endpoints see one address)."""
        return client_address(self._trusted, self._peer, forwarded)

    def _durable(self, future: asyncio.Future[None]) -> None:
        if not future.cancelled() and future.exception() is not None:
            # Storage trouble must never break a pixel or a redirect.
            log.error("hit not recorded: %s", future.exception())
        self._drain()

    def _drain(self) -> None:
        """Write every answer whose hit is durable, in order; then close, hand off or
        read on, as the connection's state says."""
        transport = self._transport
        if transport is None or transport.is_closing() or self._handed_off:
            return
        waiting = self._waiting
        if waiting and (waiting[0][0] is None or waiting[0][0].done()):
            self._last_active = self._loop.time()  # keep-alive counts from the answer
            while waiting and (waiting[0][0] is None or waiting[0][0].done()):
                transport.write(waiting.popleft()[1])
        if waiting:
            if self._handing_off and not self._reading_paused:
                transport.pause_reading()  # the rest waits for uvicorn
                self._reading_paused = True
            return
        if self._closing:
            transport.close()
        elif self._handing_off:
            self._hand_off(transport)
        elif self._reading_paused and not self._write_paused:
            transport.resume_reading()
            self._reading_paused = False
            self._loop.call_soon(self._serve)  # the requests reading paused on

    def _hand_off(self, transport: asyncio.Transport) -> None:
        """The rest of the connection is uvicorn's, starting with the unanswered bytes."""
        self._handed_off = True
        self._server_state.connections.discard(self)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        inner = GuardedHttp(self._config, self._server_state, self._app_state, self._loop,
                            limits=self._limits, head_started=self._head_started)
        if self._reading_paused:
            transport.resume_reading()
        inner.connection_made(transport)
        transport.set_protocol(inner)
        buffer, self._buffer = self._buffer, b""
        if buffer:
            inner.data_received(buffer)

    def _http(self, reply: Answer, head_only: bool, keep_alive: bool) -> bytes:
        status = _status_line(reply.status)
        if reply is PIXEL_ANSWER or reply is NOT_FOUND_ANSWER:
            key = (reply.status, head_only, keep_alive)
            rest = _CONSTANT.get(key)
            if rest is None:
                rest = _CONSTANT[key] = _rest(reply, head_only, keep_alive)
            return status + self._clock.line() + rest
        return status + self._clock.line() + _rest(reply, head_only, keep_alive)

    # idle connections

    def _touch(self) -> None:
        self._last_active = self._loop.time()
        if self._idle_timer is None:
            self._idle_timer = self._loop.call_later(self._config.timeout_keep_alive,
                                                     self._idle_check)

    def _idle_check(self) -> None:
        """Close a keep-alive connection quiet for uvicorn's keep-alive timeout, or one
        whose request head is not all there `head_timeout` after it began (a trickle
        of bytes keeps it from being quiet). One timer per connection, moved on when it
        fires, instead of one per request."""
        self._idle_timer = None
        transport = self._transport
        if transport is None or transport.is_closing() or self._handing_off:
            return
        now = self._loop.time()
        keep_alive = self._config.timeout_keep_alive
        quiet = now - self._last_active
        late = self._head_started is not None and \
            now - self._head_started >= self._limits.head_timeout
        if late and not self._waiting:
            self._closing = True  # what still comes is dropped
            refuse(transport, self._loop, 408, "request head not received within "
                   f"{self._limits.head_timeout:g} seconds")
        elif quiet >= keep_alive and not self._waiting:
            transport.close()
        else:
            wait = max(keep_alive - quiet, 0.05)
            if self._head_started is not None:
                wait = min(wait, max(self._head_started + self._limits.head_timeout - now,
                                     0.05))
            self._idle_timer = self._loop.call_later(wait, self._idle_check)


_BUSY = refusal(503, "too many connections; try again")
_refusals = {"last": 0.0}


def _refused_log(count: int) -> None:
    """A warning a minute at most, however many connections are refused."""
    now = time.monotonic()
    if now - _refusals["last"] >= 60:
        _refusals["last"] = now
        log.warning("connection refused with 503: all %d connections are busy", count)


_CONSTANT: dict[tuple[int, bool, bool], bytes] = {}
_STATUS: dict[int, bytes] = {}


def _status_line(status: int) -> bytes:
    line = _STATUS.get(status)
    if line is None:
        line = _STATUS[status] = b"HTTP/1.1 %d %s\r\n" % (
            status, http.HTTPStatus(status).phrase.encode())
    return line


def _rest(reply: Answer, head_only: bool, keep_alive: bool) -> bytes:
    """Everything after the status and date lines."""
    lines = [name + b": " + value + b"\r\n" for name, value in reply.headers]
    lines.append(b"content-length: %d\r\n" % len(reply.body))
    if not keep_alive:
        lines.append(b"connection: close\r\n")
    lines.append(b"\r\n")
    if not head_only:
        lines.append(reply.body)
    return b"".join(lines)


async def _no_app(scope: Any, receive: Any, send: Any) -> None:
    """ProxyHeadersMiddleware needs an app; only its trusted-hosts rules are used."""


def protocol_factory(codec: TokenCodec, recorder: Recorder, limits: Limits | None = None,
                     hosts: TrackingHosts | None = None) -> Callable[..., TrackingFront]:
    """What uvicorn's `http` setting takes: it calls this with its protocol arguments.
    One factory per server; `hosts`: which Host headers get HSTS."""
    limits = limits or Limits()
    clock = _Clock()
    trusted: list[Any] = []  # the server's trusted proxies, parsed on its first connection

    def build(config: Config, server_state: ServerState, app_state: dict[str, Any],
              _loop: asyncio.AbstractEventLoop | None = None) -> TrackingFront:
        if not trusted:
            trusted.append(ProxyHeadersMiddleware(_no_app, config.forwarded_allow_ips)
                           .trusted_hosts if config.proxy_headers else None)
        return TrackingFront(config, server_state, app_state, _loop, codec=codec,
                             recorder=recorder, clock=clock, trusted=trusted[0],
                             limits=limits, hosts=hosts)

    return build

"""HTTP connection limits: how many connections a process holds, how long a request head
and body may take, how large a head may be (docs/security.md).

uvicorn's httptools protocol bounds none of these: a connection that sent half a head
was held for ever, and a header value was read whole however large (100 MB each). Every
connection starts in the tracking front (track/front.py), which applies the same limits
and hands the others to `GuardedHttp`, uvicorn's protocol with the limits added.

At the connection bound, a new connection takes the place of the one that has waited
longest for a request (an idle keep-alive connection, or one still sending its head):
idle and half-open sockets can never lock out real clients. Only when every connection
is busy with a request is the newcomer refused, with a 503.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

log = logging.getLogger("mailbeacon.http")

FD_RESERVE = 256  # descriptors kept for the database, journal files, SMTP, logs
LINGER = 2.0  # seconds a refused connection is read (and dropped) before it is closed


@dataclass(frozen=True)
class Limits:
    """Per process. `max_connections` comes from MAILBEACON_HTTP_MAX_CONNECTIONS."""

    max_connections: int = 1000
    head_timeout: float = 10.0  # first byte of a request head to its end
    body_timeout: float = 120.0  # end of the head to the end of the body
    max_head_bytes: int = 64 * 1024  # request line and headers; 431 above it


class Guarded(Protocol):
    """What the connection bound asks of each connection's protocol."""

    def waiting_since(self) -> float | None:
        """Loop time since when it waits for a request head; None while busy."""

    def closing(self) -> bool: ...

    def evict(self) -> None: ...


def make_room(connections: Iterable[object], limits: Limits, loop_time: float) -> bool:
    """Whether a new connection may stay: below the bound, or after closing the one
    that has waited longest for a request. O(connections), only at the bound."""
    live = 0
    victim: Guarded | None = None
    oldest = loop_time
    for connection in connections:
        closing = getattr(connection, "closing", None)
        if closing is not None and closing():
            continue
        live += 1
        waiting_since = getattr(connection, "waiting_since", None)
        since = waiting_since() if waiting_since is not None else None
        if since is not None and since <= oldest:
            victim, oldest = connection, since  # type: ignore[assignment]
    if live < limits.max_connections:
        return True
    if victim is None:
        return False
    victim.evict()
    return True


def refusal(status: int, message: str) -> bytes:
    """A whole response that closes the connection, JSON as the API's errors."""
    body = json.dumps({"message": message}).encode()
    phrase = {408: "Request Timeout", 431: "Request Header Fields Too Large",
              503: "Service Unavailable"}[status]
    return (f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n"
            + ("retry-after: 1\r\n" if status == 503 else "") + "\r\n").encode() + body


def refuse(transport: asyncio.Transport, loop: asyncio.AbstractEventLoop, status: int,
           message: str) -> None:
    """Answer `status`, then close after a moment: closed at once while the client is
    still sending (a huge head), the connection is reset and the client may never read
    the answer. The caller drops what arrives meanwhile."""
    transport.write(refusal(status, message))
    if transport.can_write_eof():
        transport.write_eof()
    loop.call_later(LINGER, transport.close)


def fit_descriptors(limits: Limits) -> Limits:
    """Raise this process's open-file limit to hold `max_connections` and the rest (a
    full descriptor table makes accept() fail for everyone); if the hard limit does not
    allow it, lower the bound to what fits, with a warning."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = limits.max_connections + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < wanted:
        fitted = max(soft - FD_RESERVE, 16)
        log.warning("open-file limit %d: at most %d HTTP connections per process, not %d "
                    "(raise `ulimit -n`)", soft, fitted, limits.max_connections)
        return replace(limits, max_connections=fitted)
    return limits


class GuardedHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for each request head and body and
    a cap on head size. Built by the front at hand-off, with the time the head began
    (the deadline runs on from before the hand-off)."""

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None, *, limits: Limits,
                 head_started: float | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._limits = limits
        self._head_started = head_started
        self._since: float | None = head_started if head_started is not None \
            else self.loop.time()
        self._in_head = True  # the bytes coming in are a request head
        self._head_bytes = 0
        self._tail = b""  # the last bytes of the head so far: its end may straddle reads
        self._timer: asyncio.TimerHandle | None = None
        self._refused = False  # answered 408 or 431: the rest is dropped, then closed

    # the connection bound

    def waiting_since(self) -> float | None:
        return self._since

    def closing(self) -> bool:
        return self._refused or self.transport is None or self.transport.is_closing()

    def evict(self) -> None:
        self.transport.close()

    # uvicorn's protocol, limited

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            end = (self._tail + data).find(b"\r\n\r\n")
            self._head_bytes += len(data) if end < 0 else max(end + 4 - len(self._tail), 0)
            self._tail = (self._tail + data)[-3:]
            if self._head_bytes > self._limits.max_head_bytes:
                self._refuse(431, f"request head larger than {self._limits.max_head_bytes} "
                                  "bytes")
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        started = self._head_started if self._head_started is not None else self.loop.time()
        self._head_started = None
        self._arm(started + self._limits.head_timeout - self.loop.time(), self._head_late)

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes, self._tail = False, 0, b""
        self._since = None
        self._arm(self._limits.body_timeout, self._body_late)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._cancel()
        self._in_head = True
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.pipeline:
            self._since = self.loop.time()

    def handle_websocket_upgrade(self) -> None:
        self._cancel()  # the connection is the WebSocket protocol's from here
        self._since = None
        super().handle_websocket_upgrade()

    # deadlines

    def _arm(self, delay: float, late: Any) -> None:
        self._cancel()
        self._timer = self.loop.call_later(max(delay, 0.0), late)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_late(self) -> None:
        self._timer = None
        self._refuse(408, f"request head not received within "
                          f"{self._limits.head_timeout:g} seconds")

    def _body_late(self) -> None:
        self._timer = None
        self._refuse(408, f"request body not received within "
                          f"{self._limits.body_timeout:g} seconds")

    def _refuse(self, status: int, message: str) -> None:
        """Answer `status` and close; only close when a response is being written."""
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        self._cancel()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the application stops waiting for a body
            cycle.message_event.set()
        if cycle is None or cycle.response_complete or not cycle.response_started:
            refuse(self.transport, self.loop, status, message)
        else:
            self.transport.close()

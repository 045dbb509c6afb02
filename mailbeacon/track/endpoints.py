"""The tracking endpoints `/o/<token>` (open pixel) and `/c/<token>` (click redirect).

`answer()` decides, without I/O, what a tracking request gets and which hit it records;
two servers carry it out: the HTTP front (track/front.py), which answers these paths
straight from the socket, and the plain ASGI `TrackingEndpoints` below, for requests
that reach the application (in-process clients, connections that went to the API
first). A hit is answered only once it is durable. A bad token never records anything:
the pixel is still a GIF, a click gets a 404 page and never a redirect.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from mailbeacon.errors import TokenError
from mailbeacon.model.hit import Hit
from mailbeacon.model.tokens import Kind, TokenCodec
from mailbeacon.track.recorder import Recorder

log = logging.getLogger("mailbeacon.track")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Headers = tuple[tuple[bytes, bytes], ...]

# A 1x1 transparent GIF.
PIXEL = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b"
)
_NO_CACHE: Headers = (
    (b"cache-control", b"no-cache, no-store, must-revalidate, max-age=0, private"),
    (b"pragma", b"no-cache"),
    (b"expires", b"0"),
)
_HTML: Headers = ((b"content-type", b"text/html; charset=utf-8"),)
# Characters that may stay as they are in a Location header; the rest is %-encoded.
_URL_SAFE = "!#$&'()*+,/:;=?@[]~%-._"


@dataclass(frozen=True, slots=True)
class Answer:
    """A response: status, headers and the body a GET gets (HEAD gets the same headers
    and no body)."""

    status: int
    headers: Headers
    body: bytes


PIXEL_ANSWER = Answer(200, ((b"content-type", b"image/gif"), *_NO_CACHE), PIXEL)
NOT_FOUND_ANSWER = Answer(404, _HTML, b"<!doctype html><title>Link not found</title>"
                          b"<h1>Link not found</h1><p>This link is not valid.</p>")
NOT_ALLOWED_ANSWER = Answer(405, ((b"allow", b"GET, HEAD"),), b"")


def answer(codec: TokenCodec, method: str, path: str, ip: str,
           user_agent: str) -> tuple[Answer, Hit | None]:
    """What a GET or HEAD of `path` (under /o/ or /c/, %-decoded) gets, and the hit to
    record before answering, if any."""
    is_open = path.startswith("/o/")
    try:
        token = codec.decode(path[3:].split("/", 1)[0].split(".", 1)[0])
        if token.kind is not (Kind.OPEN if is_open else Kind.CLICK):
            raise TokenError("token of another kind")
    except TokenError:
        return (PIXEL_ANSWER if is_open else NOT_FOUND_ANSWER), None
    if is_open:
        reply = PIXEL_ANSWER
    else:
        location = _safe_location(token.url)
        if location is None:  # we never sign such a URL; refuse rather than redirect
            return NOT_FOUND_ANSWER, None
        reply = Answer(302, ((b"location", location), *_NO_CACHE,
                             (b"referrer-policy", b"no-referrer")), b"")
    hit = Hit(token.kind, token.delivery_id, time.time_ns() // 1000, ip, user_agent, method,
              token.url, token.link_index)
    return reply, hit


class TrackingEndpoints:
    """ASGI app for paths starting with /o/ or /c/."""

    def __init__(self, codec: TokenCodec, recorder: Recorder) -> None:
        self._codec = codec
        self._recorder = recorder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method: str = scope["method"]
        if method not in ("GET", "HEAD"):
            await respond_with(send, NOT_ALLOWED_ANSWER, method)
            return
        reply, hit = answer(self._codec, method, scope["path"], client_ip(scope),
                            header(scope, b"user-agent"))
        if hit is not None:
            try:
                await self._recorder.record(hit)
            except Exception:  # storage trouble must never break a pixel or a redirect
                log.exception("hit not recorded")
        await respond_with(send, reply, method)


def _safe_location(url: str) -> bytes | None:
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    # %-encode spaces, controls and non-ASCII, so nothing can split the header.
    return quote(url, safe=_URL_SAFE).encode("ascii")


def client_ip(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""


def header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return ""


async def respond_with(send: Send, reply: Answer, method: str) -> None:
    await respond(send, reply.status, list(reply.headers), reply.body, method)


async def respond(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes,
                  method: str) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

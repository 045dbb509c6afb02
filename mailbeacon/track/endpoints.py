"""The tracking endpoints `/o/<token>` (open pixel) and `/c/<token>` (click redirect).

Plain ASGI, without the framework: these answer every open and click of every campaign,
and routing layers cost a third of the throughput on endpoints this small (DESIGN 3).
A hit is answered only after it is committed. A bad token never records anything: the
pixel is still a GIF, a click gets a 404 page and never a redirect.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import quote, urlsplit

from mailbeacon.errors import TokenError
from mailbeacon.track.hits import Hit
from mailbeacon.track.recorder import Recorder
from mailbeacon.track.tokens import Kind, TokenCodec

log = logging.getLogger("mailbeacon.track")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

# A 1x1 transparent GIF.
PIXEL = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b"
)
_NO_CACHE = [
    (b"cache-control", b"no-cache, no-store, must-revalidate, max-age=0, private"),
    (b"pragma", b"no-cache"),
    (b"expires", b"0"),
]
_NOT_FOUND = (b"<!doctype html><title>Link not found</title>"
              b"<h1>Link not found</h1><p>This link is not valid.</p>")
# Characters that may stay as they are in a Location header; the rest is %-encoded.
_URL_SAFE = "!#$&'()*+,/:;=?@[]~%-._"


class TrackingEndpoints:
    """ASGI app for paths starting with /o/ or /c/."""

    def __init__(self, codec: TokenCodec, recorder: Recorder) -> None:
        self._codec = codec
        self._recorder = recorder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        is_open = path.startswith("/o/")
        if method not in ("GET", "HEAD"):
            await respond(send, 405, [(b"allow", b"GET, HEAD")], b"", method)
            return
        try:
            token = self._codec.decode(path[3:].split("/", 1)[0].split(".", 1)[0])
            if token.kind is not (Kind.OPEN if is_open else Kind.CLICK):
                raise TokenError("token of another kind")
        except TokenError:
            if is_open:
                await _pixel(send, method)
            else:
                await respond(send, 404, [(b"content-type", b"text/html; charset=utf-8")],
                               _NOT_FOUND, method)
            return
        location: bytes | None = b""
        if not is_open:
            location = _safe_location(token.url)
            if location is None:  # we never sign such a URL; refuse rather than redirect
                await respond(send, 404, [(b"content-type", b"text/html; charset=utf-8")],
                               _NOT_FOUND, method)
                return
        hit = Hit(token.kind, token.delivery_id, time.time_ns() // 1000, client_ip(scope),
                  header(scope, b"user-agent"), method, token.url, token.link_index)
        try:
            await self._recorder.record(hit)
        except Exception:  # storage trouble must never break a pixel or a redirect
            log.exception("hit not recorded")
        if is_open:
            await _pixel(send, method)
        else:
            assert location
            await respond(send, 302, [(b"location", location), *_NO_CACHE,
                                       (b"referrer-policy", b"no-referrer")], b"", method)


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


async def _pixel(send: Send, method: str) -> None:
    await respond(send, 200, [(b"content-type", b"image/gif"), *_NO_CACHE], PIXEL, method)


async def respond(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes,
                   method: str) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

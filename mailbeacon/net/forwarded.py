"""The client a trusted proxy names in X-Forwarded-For, kept only when it is an IP address.

uvicorn takes whatever the header says (`<img ...>` included) as the client, and events
store the client's address as their `ip`. Here a named client that is not an IP address
counts as no header at all: the peer is the client. The tracking front and the
application under uvicorn follow the same rule, with uvicorn's list of trusted proxies.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware


def ip_address(text: str) -> str | None:
    """`text` when it is an IPv4 or IPv6 address (no zone: `fe80::1%...` is not), else
    None."""
    if "%" in text:
        return None
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return None
    return text


def client_address(trusted: Any, peer: str, forwarded: str) -> str:
    """The client of a connection from `peer` whose X-Forwarded-For headers, joined with
    ", ", are `forwarded`; `trusted`: uvicorn's trusted hosts, None to ignore the header."""
    if forwarded and trusted is not None and peer in trusted:
        host, _ = trusted.get_trusted_client_address(forwarded)
        if host and ip_address(host):
            return str(host)
    return peer


class CheckedProxyHeaders(ProxyHeadersMiddleware):
    """uvicorn's proxy headers middleware, but a named client that is not an IP address
    leaves the peer as the client."""

    async def __call__(self, scope: Scope, receive: Receive,  # type: ignore[override]
                       send: Send) -> None:
        client = scope.get("client")
        if scope["type"] in ("http", "websocket") and client:
            forwarded = b", ".join(value for name, value in scope["headers"]
                                   if name == b"x-forwarded-for").decode("latin-1")
            peer = str(client[0])
            if forwarded and client_address(self.trusted_hosts, peer, forwarded) == peer:
                scope = {**scope, "headers": [(name, value) for name, value in scope["headers"]
                                              if name != b"x-forwarded-for"]}
        await super().__call__(scope, receive, send)  # type: ignore[arg-type]


def check_forwarded(config: Config) -> Config:
    """`config`, loaded, with uvicorn's proxy headers middleware (if any) replaced by
    `CheckedProxyHeaders`."""
    if not config.loaded:
        config.load()
    if type(config.loaded_app) is ProxyHeadersMiddleware:
        config.loaded_app = CheckedProxyHeaders(config.loaded_app.app,
                                                config.forwarded_allow_ips)
    return config

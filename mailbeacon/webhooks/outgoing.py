"""One webhook post: the address check, a deadline for the whole exchange, a bounded answer.

    answer = await post(client, url, payload, key, timeout=5.0, forbid_private=True)

With `forbid_private`, the URL's host is resolved here, every address it resolves to must
be public (an IPv4 address inside an IPv6 one is judged as IPv4), and the connection goes
to the address that was checked (the Host header and TLS name stay the URL's), so a DNS
answer that changes between the check and the connection cannot reach a private service.
Redirects are never followed. At most `MAX_ANSWER_BYTES` of the answer are read.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

import httpx

from mailbeacon import __version__
from mailbeacon.webhooks.signing import signature_block
from mailbeacon.webhooks.store import redact

USER_AGENT = f"mailbeacon-webhooks/{__version__}"
MAX_ANSWER_BYTES = 64 * 1024  # of an endpoint's answer body, read then dropped
EXCERPT_CHARS = 500  # of the answer body, kept in the delivery log
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


class Refused(Exception):
    """The URL's host is, or resolves to, an address posts may not go to."""


@dataclass(frozen=True)
class Answer:
    code: int | None  # HTTP status; None when no answer came
    error: str  # what went wrong, or an excerpt of the body
    truncated: bool = False  # the body was longer than the excerpt in `error`

    @property
    def outcome(self) -> str:
        if self.code is not None and 200 <= self.code < 300:
            return "done"
        return "rejected" if self.code == 406 else "retry"


def is_public(address: str) -> bool:
    """Whether an IP address is globally routable unicast (IPv4 inside IPv6 included:
    ::ffff:127.0.0.1 is loopback)."""
    ip = ipaddress.ip_address(address.partition("%")[0])
    if isinstance(ip, ipaddress.IPv6Address):
        inner = ip.ipv4_mapped or ip.sixtofour
        if inner is None and (ip in _NAT64 or (ip in _IPV4_COMPATIBLE and int(ip) > 1)):
            inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if inner is not None and not is_public(str(inner)):
            return False
    return ip.is_global and not ip.is_multicast


async def public_address(host: str, port: int) -> str:
    """The first address `host` resolves to, once every address it resolves to is public;
    Refused otherwise, OSError when it does not resolve."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = [str(info[4][0]) for info in infos]
    if not addresses or not all(is_public(a) for a in addresses):
        raise Refused(host)
    return addresses[0]


async def post(client: httpx.AsyncClient, url: str, payload: dict[str, Any], key: str, *,
               timeout: float, forbid_private: bool = False) -> Answer:
    """Post a signed event to `url` and say how it went; never raises (but CancelledError).
    `timeout` bounds the whole exchange: resolving, connecting, sending, reading."""
    body = {"signature": signature_block(key), "event-data": payload}
    try:
        async with asyncio.timeout(timeout):
            return await _exchange(client, url, body, forbid_private)
    except (TimeoutError, httpx.TimeoutException):
        return Answer(None, "timed out")
    except Refused:
        return Answer(None, "refused: the URL's host is a private address")
    except OSError as exc:  # the resolver's gaierror
        return Answer(None, f"cannot resolve the URL's host: {exc.strerror or exc}")
    except (httpx.HTTPError, httpx.InvalidURL) as exc:  # refused, reset, TLS, bad URL ...
        return Answer(None, f"{type(exc).__name__}: {exc}".replace(url, redact(url)))


async def _exchange(client: httpx.AsyncClient, url: str, body: dict[str, Any],
                    forbid_private: bool) -> Answer:
    target = httpx.URL(url)
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    extensions: dict[str, Any] = {}
    if forbid_private:
        host = target.raw_host.decode("ascii")
        port = target.port or (443 if target.scheme == "https" else 80)
        address = await public_address(host, port)
        headers["Host"] = target.netloc.decode("ascii")
        if target.scheme == "https":
            extensions["sni_hostname"] = host  # the certificate is checked for the name
        target = target.copy_with(host=address)
    request = client.build_request("POST", target, json=body, headers=headers,
                                   extensions=extensions)
    response = await client.send(request, stream=True, follow_redirects=False)
    try:
        kept = bytearray()
        async for chunk in response.aiter_raw():
            kept += chunk
            if len(kept) >= MAX_ANSWER_BYTES:
                break  # the rest is never read: closing drops the connection
    finally:
        await response.aclose()
    text = kept[:MAX_ANSWER_BYTES].decode("utf-8", "replace")
    return Answer(response.status_code, text[:EXCERPT_CHARS],
                  truncated=len(text) > EXCERPT_CHARS or len(kept) >= MAX_ANSWER_BYTES)

"""The DNS records a domain needs (tracking CNAME, bounce MX, DKIM TXT) and a check of
whether they resolve, with a short timeout: offline or behind a broken resolver the check
says "could not check" instead of hanging the page."""

from __future__ import annotations

import ipaddress
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

import dns.exception
import dns.resolver

from mailbeacon.domains.domain import Domain
from mailbeacon.send import dkim

TIMEOUT = 2.0  # seconds per lookup; lookups run in parallel

NOT_CHECKED = "not checked"
OK = "ok"
DIFFERENT = "different"
NOT_FOUND = "not found"
UNCHECKABLE = "could not check"


@dataclass(frozen=True)
class Record:
    purpose: str
    name: str  # fully qualified, without the trailing dot
    type: str  # CNAME | MX | TXT
    value: str  # what to publish
    status: str = NOT_CHECKED
    found: tuple[str, ...] = ()

    @property
    def zone_line(self) -> str:
        value = dkim.txt_strings(self.value) if self.type == "TXT" else (
            f"10 {self.value}." if self.type == "MX" else f"{self.value}.")
        return f"{self.name}. IN {self.type} {value}"


def is_host_name(host: str) -> bool:
    """A name DNS records can point at (not an IP address, not localhost)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return "." in host
    return False


def records(domain: Domain, server_url: str) -> list[Record]:
    """What to publish for the domain, pointing at the server reached at `server_url`."""
    server = urlsplit(server_url).hostname or "mailbeacon.example.com"
    if not is_host_name(server):
        server = "YOUR-SERVER-HOST-NAME"  # MAILBEACON_PUBLIC_URL is an IP: no name to use
    found = []
    tracking_host = urlsplit(domain.tracking_url).hostname if domain.tracking_url else None
    if tracking_host and tracking_host != server:
        found.append(Record("Tracking links", tracking_host, "CNAME", server))
    found.append(Record("Bounces and complaints", domain.verp_domain, "MX", server))
    if domain.dkim_selector and domain.dkim_private_key:
        key = dkim.DkimKey(domain.dkim_selector, domain.dkim_private_key)
        found.append(Record("DKIM signature", dkim.dns_name(domain.name, key.selector), "TXT",
                            dkim.dns_record(key)))
    return found


def _normalize(kind: str, value: str) -> str:
    value = value.strip().rstrip(".").lower()
    if kind == "TXT":
        return "".join(value.split())
    return value


def check_record(record: Record, timeout: float = TIMEOUT) -> Record:
    """The record with `status` and what DNS answered."""
    try:
        resolver = dns.resolver.Resolver()
        resolver.lifetime = timeout
        resolver.timeout = timeout
        answer = resolver.resolve(record.name, record.type)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return replace(record, status=NOT_FOUND)
    except (dns.exception.DNSException, OSError):  # timeout, no resolver, no network
        return replace(record, status=UNCHECKABLE)
    values: list[str] = []
    for item in answer:
        if record.type == "MX":
            values.append(str(item.exchange))
        elif record.type == "TXT":
            values.append(b"".join(item.strings).decode("ascii", "replace"))
        else:
            values.append(item.to_text())
    wanted = _normalize(record.type, record.value)
    status = OK if any(_normalize(record.type, v) == wanted for v in values) else DIFFERENT
    return replace(record, status=status, found=tuple(values))


def check_all(found: list[Record], timeout: float = TIMEOUT) -> list[Record]:
    if not found:
        return found
    with ThreadPoolExecutor(max_workers=len(found)) as pool:
        return list(pool.map(lambda r: check_record(r, timeout), found))

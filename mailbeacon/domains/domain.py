"""Sending domains and their tracking settings."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import Connection, func, select
from sqlalchemy.exc import IntegrityError

from mailbeacon.errors import BadRequest, NotFound
from mailbeacon.model.ids import new_id
from mailbeacon.storage.db import Database, now_us
from mailbeacon.storage.schema import domains

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
CLICK_MODES = ("yes", "no", "htmlonly")
DEFAULT_FOOTER_HTML = (
    '<p style="font-size:12px;color:#777">To stop receiving these emails, '
    '<a href="%unsubscribe_url%">unsubscribe</a>.</p>')
DEFAULT_FOOTER_TEXT = "\n\nTo stop receiving these emails, unsubscribe: %unsubscribe_url%\n"


@dataclass(frozen=True)
class Domain:
    name: str
    id: str
    created_at: int
    track_opens: bool
    track_clicks: str  # yes | no | htmlonly
    pixel_top: bool
    tracking_url: str | None
    bounce_domain: str | None = None
    dkim_selector: str | None = None
    dkim_private_key: str | None = field(default=None, repr=False)
    unsubscribe_footer: bool = False
    footer_html: str | None = None
    footer_text: str | None = None
    soft_bounce_limit: int = 5
    list_unsubscribe: bool = True  # one-click headers on every message (not only scoped)
    web_scheme: str | None = None  # http | https (Mailgun's); None: as the base URL says

    @classmethod
    def from_row(cls, row: Any) -> Domain:
        return cls(row.name, row.id, row.created_at, bool(row.track_opens), row.track_clicks,
                   bool(row.pixel_top), row.tracking_url, row.bounce_domain,
                   row.dkim_selector, row.dkim_private_key, bool(row.unsubscribe_footer),
                   row.footer_html, row.footer_text, row.soft_bounce_limit,
                   bool(row.list_unsubscribe), row.web_scheme)

    def tracking_base(self, default: str) -> str:
        """The base of this domain's tracking links: its tracking URL, else `default` (the
        public URL), in its `web_scheme` when set. A port written for the other scheme
        is dropped: https://email.example.com, not https://email.example.com:80."""
        base = (self.tracking_url or default).rstrip("/")
        parts = urlsplit(base)
        if self.web_scheme is None or parts.scheme == self.web_scheme or not parts.hostname:
            return base
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return urlunsplit((self.web_scheme, host, parts.path, "", ""))

    @property
    def verp_domain(self) -> str:
        """Where bounces and mailto unsubscribes come back to."""
        return self.bounce_domain or self.name


def normalize_name(name: str) -> str:
    """A domain name in lowercase ASCII (IDNA), or BadRequest."""
    name = name.strip().lower()
    ascii_name = dns_name(name, f"'{name.rstrip('.')}' is not a valid domain name")
    if "." not in ascii_name:
        raise BadRequest(f"'{name.rstrip('.')}' is not a valid domain name")
    return ascii_name


def dns_name(name: str, refusal: str) -> str:
    """`name` in lowercase ASCII (IDNA, no trailing dot) when it is a valid DNS name:
    labels of 1-63 letters, digits and hyphens, no hyphen at either end, 253 characters
    in all; else BadRequest starting with `refusal` and saying what is wrong."""
    try:
        ascii_name = name.rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise BadRequest(refusal) from exc
    bad = next((label for label in ascii_name.split(".") if not _LABEL.match(label)), None)
    if bad is not None:
        raise BadRequest(f"{refusal}: label {bad!r} must be 1-63 letters, digits or "
                         "hyphens, with no hyphen at either end")
    if len(ascii_name) > 253:
        raise BadRequest(f"{refusal}: longer than 253 characters")
    return ascii_name


def validate_tracking_url(url: str) -> str:
    """A tracking base URL such as https://email.example.com, or BadRequest.

    The host must be a DNS name (labels of 1-63 letters, digits and hyphens, no hyphen
    at either end, a top-level label not all digits; IDN names become their ASCII form)
    or an IP literal (for tests and private setups). The tracking endpoints are served at
    the root, so a path is refused rather than silently dropped from every link.
    """
    text = url.strip()
    if any(ord(c) < 0x21 or c in "\\\x7f" for c in text):
        raise BadRequest("tracking URL must not contain spaces, control characters or "
                         "backslashes")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise BadRequest(f"tracking URL is not valid: {exc}") from exc
    if (parts.scheme.lower() not in ("http", "https") or not parts.hostname or parts.query
            or parts.fragment or parts.username is not None or parts.password is not None
            or "?" in text or "#" in text):
        raise BadRequest("tracking URL must look like https://email.example.com "
                         "(http or https, a host, no credentials, query or fragment)")
    if parts.path not in ("", "/"):
        raise BadRequest(f"tracking URL must not have a path ({parts.path!r}): the "
                         "tracking endpoints are served at the root of the tracking host, "
                         "e.g. https://email.example.com")
    host = _tracking_host(parts.hostname)
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    return f"{parts.scheme.lower()}://{netloc}"


def _tracking_host(hostname: str) -> str:
    """The host of a tracking URL in canonical form, or BadRequest naming the problem."""
    try:
        return str(ipaddress.ip_address(hostname))
    except ValueError:
        pass
    ascii_name = dns_name(hostname, f"tracking host {hostname!r} is not a valid DNS name")
    if ascii_name.rsplit(".", 1)[-1].isdigit():
        raise BadRequest(f"tracking host {hostname!r} is not a valid DNS name: its last "
                         "label is all digits (an IP address? write it in full)")
    return ascii_name


def parse_bool(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("yes", "true", "1", "on"):
        return True
    if lowered in ("no", "false", "0", "off"):
        return False
    raise BadRequest(f"'{name}' must be yes or no, got '{value}'")


def parse_click_mode(value: str, name: str) -> str:
    lowered = value.strip().lower()
    if lowered == "htmlonly":
        return lowered
    return "yes" if parse_bool(lowered, name) else "no"


def parse_web_scheme(value: str) -> str | None:
    """`web_scheme` as the API and the dashboard take it: http or https; empty: None
    (links keep the scheme of the tracking URL, or of the public URL)."""
    lowered = value.strip().lower()
    if lowered not in ("", "http", "https"):
        raise BadRequest(f"'web_scheme' must be http or https, got '{value}'")
    return lowered or None


def add_domain(db: Database, name: str, tracking_url: str | None = None,
               web_scheme: str | None = None) -> Domain:
    name = normalize_name(name)
    url = validate_tracking_url(tracking_url) if tracking_url else None
    try:
        with db.write() as conn:
            conn.execute(domains.insert().values(
                name=name, id=new_id(), created_at=now_us(), track_opens=True,
                track_clicks="yes", pixel_top=False, tracking_url=url, web_scheme=web_scheme))
    except IntegrityError as exc:
        raise BadRequest(f"Domain already exists: {name}") from exc
    return get_domain(db, name)


def find_domain(conn: Connection, name: str) -> Domain | None:
    row = conn.execute(select(domains).where(domains.c.name == name.lower())).first()
    return Domain.from_row(row) if row else None


def get_domain(db: Database, name: str) -> Domain:
    with db.read() as conn:
        found = find_domain(conn, name)
    if found is None:
        raise NotFound(f"Domain not found: {name}")
    return found


def list_domains(db: Database, limit: int = 100, skip: int = 0) -> tuple[int, list[Domain]]:
    with db.read() as conn:
        total = conn.execute(select(func.count()).select_from(domains)).scalar_one()
        rows = conn.execute(
            select(domains).order_by(domains.c.name).limit(limit).offset(skip)).all()
    return int(total), [Domain.from_row(r) for r in rows]


def update_domain(db: Database, name: str, **changes: Any) -> Domain:
    """Change settings: tracking, bounce domain, DKIM key, unsubscribe footer, limits."""
    allowed = {"track_opens", "track_clicks", "pixel_top", "tracking_url", "bounce_domain",
               "dkim_selector", "dkim_private_key", "unsubscribe_footer", "footer_html",
               "footer_text", "soft_bounce_limit", "bot_thresholds", "list_unsubscribe",
               "web_scheme"}
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"unknown domain settings: {sorted(unknown)}")
    domain = get_domain(db, name)
    if changes:
        with db.write() as conn:
            conn.execute(domains.update().where(domains.c.name == domain.name).values(**changes))
    return get_domain(db, domain.name)


def domain_json(domain: Domain) -> dict[str, Any]:
    """A domain as Mailgun's API shows it, with our tracking settings."""
    scheme = urlsplit(domain.tracking_url).scheme if domain.tracking_url else "http"
    return {
        "name": domain.name,
        "id": domain.id,
        "created_at": _rfc2822(domain.created_at),
        "state": "active",
        "type": "custom",
        "web_scheme": domain.web_scheme or scheme,
        "tracking_url": domain.tracking_url,
        "bounce_domain": domain.verp_domain,
        "dkim_selector": domain.dkim_selector,
        "soft_bounce_limit": domain.soft_bounce_limit,
        "smtp_login": f"postmaster@{domain.name}",
        "spam_action": "disabled",
        "wildcard": False,
    }


def tracking_json(domain: Domain) -> dict[str, Any]:
    clicks: dict[str, Any] = {"active": domain.track_clicks != "no"}
    if domain.track_clicks == "htmlonly":
        clicks["active"] = "htmlonly"
    return {
        "open": {"active": domain.track_opens, "place_at_the_top": domain.pixel_top},
        "click": clicks,
        "unsubscribe": {"active": domain.unsubscribe_footer,
                        "list_unsubscribe": domain.list_unsubscribe,
                        "html_footer": domain.footer_html or DEFAULT_FOOTER_HTML,
                        "text_footer": domain.footer_text or DEFAULT_FOOTER_TEXT},
    }


def _rfc2822(micros: int) -> str:
    return formatdate(micros / 1_000_000, usegmt=True)

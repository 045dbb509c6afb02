"""Sending domains and their settings: tracking, bounces, DKIM, privacy, bot thresholds.

`Domain` is the one record of a domain's settings; read it with `get_domain` (or
`find_domain` inside a transaction) and change it with `update_domain`.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import re
from dataclasses import asdict, dataclass, field, fields
from email.utils import formatdate
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import Connection, func, select
from sqlalchemy.exc import IntegrityError

from mailbeacon.errors import BadRequest, NotFound
from mailbeacon.model.clock import now_us
from mailbeacon.model.ids import new_id
from mailbeacon.storage.db import Database
from mailbeacon.storage.schema import domains

log = logging.getLogger("mailbeacon.domains")

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
DEFAULT_FOOTER_HTML = (
    '<p style="font-size:12px;color:#777">To stop receiving these emails, '
    '<a href="%unsubscribe_url%">unsubscribe</a>.</p>')
DEFAULT_FOOTER_TEXT = "\n\nTo stop receiving these emails, unsubscribe: %unsubscribe_url%\n"
TRACK_ACTIVITIES = ("always", "consent", "never")  # privacy: whose activity is recorded
MIN_RETENTION_DAYS = 1
MAX_RETENTION_DAYS = 3650


@dataclass(frozen=True)
class Thresholds:
    """Per-domain timing limits of the scanner rules, stored as JSON in the domain row."""

    click_after_delivery_seconds: float = 3.0  # a click sooner than this is a scanner
    burst_links: int = 3  # this many different links of one message ...
    burst_seconds: float = 1.0  # ... clicked within this many seconds is a scanner

    def __post_init__(self) -> None:
        for name in ("click_after_delivery_seconds", "burst_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                math.isfinite(value) and value >= 0
            ):
                raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
            object.__setattr__(self, name, float(value))  # JSON may hold 3 for 3.0
        if isinstance(self.burst_links, bool) or not isinstance(self.burst_links, int) or (
            self.burst_links < 2
        ):
            raise ValueError(f"burst_links must be an integer >= 2, got {self.burst_links!r}")

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Thresholds:
        """Thresholds from a domain's stored JSON; missing keys take the defaults.

        Raises ValueError naming the key for an unknown key or an unusable value.
        """
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ValueError(f"bot thresholds must be a JSON object, got {data!r}")
        unknown = sorted(set(data) - {field.name for field in fields(cls)})
        if unknown:
            raise ValueError(f"unknown bot threshold(s): {', '.join(map(str, unknown))}")
        return cls(**data)

    def to_json(self) -> dict[str, float | int]:
        return asdict(self)


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
    # Privacy (DESIGN 12).
    track_activities: str = "always"  # always | consent | never
    truncate_ips: bool = False
    retention_days: int = 30  # raw events and webhook deliveries (insight/retention)
    bot_thresholds: Thresholds = field(default_factory=Thresholds)
    web_scheme: str | None = None  # http | https (Mailgun's); None: as the base URL says

    @classmethod
    def from_row(cls, row: Any) -> Domain:
        return cls(
            name=row.name, id=row.id, created_at=row.created_at,
            track_opens=bool(row.track_opens), track_clicks=row.track_clicks,
            pixel_top=bool(row.pixel_top), tracking_url=row.tracking_url,
            bounce_domain=row.bounce_domain, dkim_selector=row.dkim_selector,
            dkim_private_key=row.dkim_private_key,
            unsubscribe_footer=bool(row.unsubscribe_footer), footer_html=row.footer_html,
            footer_text=row.footer_text, soft_bounce_limit=row.soft_bounce_limit,
            list_unsubscribe=bool(row.list_unsubscribe),
            track_activities=row.track_activities, truncate_ips=bool(row.truncate_ips),
            retention_days=int(row.retention_days),
            bot_thresholds=_stored_thresholds(row.name, row.bot_thresholds),
            web_scheme=row.web_scheme)

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


def _stored_thresholds(name: str, raw: str | None) -> Thresholds:
    """The thresholds stored as JSON text; the defaults when there are none, or when the
    stored ones are unusable (only ever written through `Thresholds`, so that means a
    hand-edited row: hits are still judged, with the defaults, rather than failing)."""
    if not raw:
        return Thresholds()
    try:
        return Thresholds.from_json(json.loads(raw))
    except ValueError:
        log.warning("domain %s: unusable bot_thresholds in the database, using the "
                    "defaults", name)
        return Thresholds()


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


def parse_privacy(track_activities: str | None = None, truncate_ips: str | None = None,
                  retention_days: str | None = None) -> dict[str, Any]:
    """Privacy changes from form values (None: unchanged), for `update_domain`;
    BadRequest naming a bad one."""
    changes: dict[str, Any] = {}
    if track_activities is not None:
        value = track_activities.strip().lower()
        if value not in TRACK_ACTIVITIES:
            raise BadRequest(f"'track_activities' must be one of {', '.join(TRACK_ACTIVITIES)}, "
                             f"got {track_activities!r}")
        changes["track_activities"] = value
    if truncate_ips is not None:
        changes["truncate_ips"] = parse_bool(truncate_ips, "truncate_ips")
    if retention_days is not None:
        raw = retention_days.strip()
        # The length check keeps int() away from absurdly long digit strings.
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 5
                and MIN_RETENTION_DAYS <= int(raw) <= MAX_RETENTION_DAYS):
            raise BadRequest(f"'retention_days' must be an integer from {MIN_RETENTION_DAYS} "
                             f"to {MAX_RETENTION_DAYS}, got {retention_days!r}")
        changes["retention_days"] = int(raw)
    return changes


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


_SETTINGS = frozenset({
    "track_opens", "track_clicks", "pixel_top", "tracking_url", "bounce_domain",
    "dkim_selector", "dkim_private_key", "unsubscribe_footer", "footer_html", "footer_text",
    "soft_bounce_limit", "list_unsubscribe", "track_activities", "truncate_ips",
    "retention_days", "bot_thresholds", "web_scheme"})


def update_domain(db: Database, name: str, **changes: Any) -> Domain:
    """Change settings (the fields of `Domain`, values already checked); the domain
    afterwards, read in the same transaction. NotFound for an unknown domain."""
    unknown = set(changes) - _SETTINGS
    if unknown:
        raise ValueError(f"unknown domain settings: {sorted(unknown)}")
    if isinstance(changes.get("bot_thresholds"), Thresholds):
        changes["bot_thresholds"] = json.dumps(changes["bot_thresholds"].to_json())
    with db.write() as conn:
        if changes:
            conn.execute(domains.update().where(domains.c.name == name.lower())
                         .values(**changes))
        found = find_domain(conn, name)
    if found is None:
        raise NotFound(f"Domain not found: {name}")
    return found


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


def privacy_json(domain: Domain) -> dict[str, Any]:
    return {"track_activities": domain.track_activities, "truncate_ips": domain.truncate_ips,
            "retention_days": domain.retention_days}


def _rfc2822(micros: int) -> str:
    return formatdate(micros / 1_000_000, usegmt=True)

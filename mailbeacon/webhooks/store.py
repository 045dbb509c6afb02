"""Webhook subscriptions and signing keys.

Which deliveries an event creates is decided where events are written
(events/fanout.py), so an event is never stored without its webhook deliveries.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from sqlalchemy import select

from mailbeacon.errors import BadRequest, NotFound
from mailbeacon.events.fanout import WEBHOOK_IDS
from mailbeacon.model.clock import now_us
from mailbeacon.storage.db import Database
from mailbeacon.storage.schema import domains, webhooks
from mailbeacon.webhooks.signing import new_signing_key

MAX_URLS = 3


def check_webhook_id(webhook: str) -> str:
    if webhook not in WEBHOOK_IDS:
        raise BadRequest(f"Unknown webhook id {webhook!r}; one of: {', '.join(WEBHOOK_IDS)}")
    return webhook


def check_url(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest(f"Webhook URL must be http(s)://host/...: {redact(url)!r}")
    if any(c in url for c in "\r\n\t "):
        raise BadRequest("Webhook URL must not contain spaces or line breaks")
    if len(url) > 2048:
        raise BadRequest("Webhook URL is longer than 2048 characters")
    return url.strip()


def redact(url: str) -> str:
    """The URL without credentials, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def urls(db: Database, domain: str) -> dict[str, list[str]]:
    with db.read() as conn:
        rows = conn.execute(select(webhooks).where(webhooks.c.domain == domain)
                            .order_by(webhooks.c.created_at)).all()
    found: dict[str, list[str]] = {}
    for row in rows:
        found.setdefault(row.webhook, []).append(row.url)
    return found


def set_urls(db: Database, domain: str, webhook: str, new_urls: Sequence[str],
             replace: bool) -> list[str]:
    """Add (or with `replace`, set) the URLs of one webhook; at most 3."""
    check_webhook_id(webhook)
    cleaned = list(dict.fromkeys(check_url(u) for u in new_urls))
    if not cleaned:
        raise BadRequest("'url' parameter is missing")
    with db.write() as conn:
        current = [r.url for r in conn.execute(
            select(webhooks.c.url).where(webhooks.c.domain == domain,
                                         webhooks.c.webhook == webhook))]
        if not replace and current:
            raise BadRequest(f"Webhook {webhook!r} already exists; use PUT to change it")
        if len(cleaned) > MAX_URLS:
            raise BadRequest(f"At most {MAX_URLS} URLs per webhook")
        conn.execute(webhooks.delete().where(webhooks.c.domain == domain,
                                             webhooks.c.webhook == webhook))
        now = now_us()
        conn.execute(webhooks.insert(), [
            {"domain": domain, "webhook": webhook, "url": u, "created_at": now + i}
            for i, u in enumerate(cleaned)])
    return cleaned


def delete(db: Database, domain: str, webhook: str) -> list[str]:
    check_webhook_id(webhook)
    with db.write() as conn:
        current = [r.url for r in conn.execute(
            select(webhooks.c.url).where(webhooks.c.domain == domain,
                                         webhooks.c.webhook == webhook))]
        if not current:
            raise NotFound("Webhook not found")
        conn.execute(webhooks.delete().where(webhooks.c.domain == domain,
                                             webhooks.c.webhook == webhook))
    return current


def signing_key(db: Database, domain: str, rotate: bool = False) -> str:
    """The domain's webhook signing key, made on first use (or anew with `rotate`).
    Two first uses at once agree on one key: only a key-less row takes a new one."""
    if not rotate:
        with db.read() as conn:
            key = conn.execute(select(domains.c.webhook_signing_key)
                               .where(domains.c.name == domain)).scalar()
        if key:
            return str(key)
    key = new_signing_key()
    with db.write() as conn:
        change = domains.update().where(domains.c.name == domain)
        if not rotate:
            change = change.where(domains.c.webhook_signing_key.is_(None)
                                  | (domains.c.webhook_signing_key == ""))
        conn.execute(change.values(webhook_signing_key=key))
        stored = conn.execute(select(domains.c.webhook_signing_key)
                              .where(domains.c.name == domain)).scalar()
    return str(stored) if stored else key

"""Webhook subscriptions, signing keys and the outbox.

`outbox_rows` runs inside every event-writing transaction (storage/records.py), so an
event is never stored without its webhook deliveries.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection, select

from mailbeacon.errors import BadRequest, NotFound
from mailbeacon.events.vocabulary import UNIQUE_OPENED, EventRecord, EventType, Severity
from mailbeacon.model.ids import new_id
from mailbeacon.storage.db import Database, now_us
from mailbeacon.storage.schema import domains, webhook_deliveries, webhooks
from mailbeacon.webhooks.signing import new_signing_key

WEBHOOK_IDS = ("accepted", "delivered", "opened", "clicked", "unsubscribed", "complained",
               "permanent_fail", "temporary_fail", "first_opened")
MAX_URLS = 3


def webhook_ids_for(record: EventRecord) -> list[str]:
    """Which webhooks an event goes to."""
    if record.event is EventType.FAILED:
        return ["permanent_fail" if record.severity is Severity.PERMANENT
                else "temporary_fail"]
    ids = [str(record.event)]
    if record.event is EventType.OPENED and any(
            name == UNIQUE_OPENED and added for name, added, _ in record.counters):
        ids.append("first_opened")  # only the first open of a message x recipient
    return ids


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


def outbox_rows(conn: Connection, records: Sequence[EventRecord], ids: Sequence[str]) -> None:
    """One pending delivery per event x subscribed URL, in the caller's transaction."""
    names = sorted({r.message.domain for r in records})
    if not names:
        return
    subscribed: dict[tuple[str, str], list[str]] = {}
    for row in conn.execute(select(webhooks).where(webhooks.c.domain.in_(names))
                            .order_by(webhooks.c.created_at)):
        subscribed.setdefault((row.domain, row.webhook), []).append(row.url)
    if not subscribed:
        return
    now = now_us()
    rows: list[dict[str, Any]] = []
    for record, event_id in zip(records, ids, strict=True):
        for webhook in webhook_ids_for(record):
            for url in subscribed.get((record.message.domain, webhook), []):
                payload = dict(record.data, id=event_id)
                if webhook == "first_opened":
                    payload["event"] = "first_opened"
                rows.append({"id": new_id(now), "domain": record.message.domain,
                             "webhook": webhook, "url": url, "event_id": event_id,
                             "payload": json.dumps(payload, separators=(",", ":")),
                             "status": "pending", "attempts": 0, "next_attempt_at": now,
                             "created_at": now})
    if rows:
        conn.execute(webhook_deliveries.insert(), rows)


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

"""The outbox as the customer sees it: list deliveries, replay failed ones, test a URL."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from sqlalchemy import func, select

from mailbeacon.errors import BadRequest, NotFound
from mailbeacon.model.clock import now_us
from mailbeacon.model.ids import new_id
from mailbeacon.storage.db import Database
from mailbeacon.storage.schema import webhook_deliveries
from mailbeacon.webhooks.outgoing import Answer, post
from mailbeacon.webhooks.store import check_url, redact, signing_key

STATUSES = ("pending", "sending", "done", "rejected", "failed")


def list_deliveries(db: Database, domain: str, status: str | None, limit: int,
                    before: str | None) -> list[dict[str, Any]]:
    """Newest first; `before` is the id of the last row seen (keyset paging)."""
    if status is not None and status not in STATUSES:
        raise BadRequest(f"'status' must be one of {', '.join(STATUSES)}")
    # Every column but the payload, which the log does not show.
    query = (select(*(c for c in webhook_deliveries.c if c.name != "payload"))
             .where(webhook_deliveries.c.domain == domain))
    if status:
        query = query.where(webhook_deliveries.c.status == status)
    if before:
        query = query.where(webhook_deliveries.c.id < before)
    with db.read() as conn:
        rows = conn.execute(query.order_by(webhook_deliveries.c.id.desc()).limit(limit)).all()
    return [{
        "id": r.id, "webhook": r.webhook, "url": redact(r.url), "event-id": r.event_id,
        "status": r.status, "attempts": r.attempts,
        "last-code": r.last_code, "last-error": r.last_error,
        "last-attempt-at": r.last_attempt_at / 1e6 if r.last_attempt_at else None,
        "next-attempt-at": r.next_attempt_at / 1e6 if r.status == "pending" else None,
        "created-at": r.created_at / 1e6,
    } for r in rows]


def replay(db: Database, domain: str, delivery_id: str | None = None) -> int:
    """Send failed (or rejected, when named) deliveries again from the start."""
    where = [webhook_deliveries.c.domain == domain]
    if delivery_id is not None:
        where.append(webhook_deliveries.c.id == delivery_id)
        where.append(webhook_deliveries.c.status.in_(("failed", "rejected", "done")))
    else:
        where.append(webhook_deliveries.c.status == "failed")
    with db.write() as conn:
        count = conn.execute(webhook_deliveries.update().where(*where).values(
            status="pending", attempts=0, next_attempt_at=now_us(), lease_until=None)).rowcount
    if delivery_id is not None and not count:
        raise NotFound("No finished webhook delivery with that id")
    return int(count)


def counts(db: Database, domain: str) -> dict[str, int]:
    with db.read() as conn:
        rows = conn.execute(select(webhook_deliveries.c.status, func.count())
                            .where(webhook_deliveries.c.domain == domain)
                            .group_by(webhook_deliveries.c.status)).all()
    return {status: int(n) for status, n in rows}


def sample_event(domain: str, event: str) -> dict[str, Any]:
    """A made-up event of the given kind, marked as a test."""
    now = now_us()
    return {"id": new_id(now), "event": event, "timestamp": now / 1e6, "log-level": "info",
            "recipient": "alice@example.com", "recipient-domain": "example.com",
            "tags": ["test"], "user-variables": {},
            "message": {"headers": {"message-id": f"test@{domain}", "from": f"test@{domain}",
                                    "to": "alice@example.com", "subject": "Test webhook"}},
            "flags": {"is-test-mode": True}}


async def send_test(db: Database, domain: str, url: str, event: str, *, timeout: float,
                    forbid_private: bool) -> Answer:
    """Post a sample event to `url` now, under the rules stored webhooks follow."""
    check_url(url)
    key = await asyncio.to_thread(signing_key, db, domain)
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False,
                                 trust_env=False) as client:
        return await post(client, url, json.loads(json.dumps(sample_event(domain, event))),
                          key, timeout=timeout, forbid_private=forbid_private)

"""Which webhook deliveries an event creates, written with the event.

The webhooks package reads and posts the rows; they are made here, in the same
transaction as their events (events/writer.py), so none is ever lost.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection

from mailbeacon.events.vocabulary import UNIQUE_OPENED, EventRecord, EventType, Severity
from mailbeacon.model.clock import now_us
from mailbeacon.model.ids import new_id
from mailbeacon.storage.bulk import any_of, insert_rows, list_param
from mailbeacon.storage.schema import webhook_deliveries

WEBHOOK_IDS = ("accepted", "delivered", "opened", "clicked", "unsubscribed", "complained",
               "permanent_fail", "temporary_fail", "first_opened")


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


def outbox_rows(conn: Connection, records: Sequence[EventRecord], ids: Sequence[str]) -> None:
    """One pending delivery per event x subscribed URL, in the caller's transaction."""
    names = sorted({r.message.domain for r in records})
    if not names:
        return
    subscribed: dict[tuple[str, str], list[str]] = {}
    for domain, webhook, url in conn.exec_driver_sql(
            f"SELECT domain, webhook, url FROM webhooks WHERE domain {any_of(conn)} "
            "ORDER BY created_at", (list_param(conn, names),)):
        subscribed.setdefault((domain, webhook), []).append(url)
    if not subscribed:
        return
    now = now_us()
    rows: list[tuple[Any, ...]] = []
    for record, event_id in zip(records, ids, strict=True):
        for webhook in webhook_ids_for(record):
            for url in subscribed.get((record.message.domain, webhook), []):
                payload = dict(record.data, id=event_id)
                if webhook == "first_opened":
                    payload["event"] = "first_opened"
                rows.append((new_id(now), record.message.domain, webhook, url, event_id,
                             json.dumps(payload, separators=(",", ":")), "pending", 0, now,
                             now))
    insert_rows(conn, webhook_deliveries, _COLUMNS, rows)


_COLUMNS = ("id", "domain", "webhook", "url", "event_id", "payload", "status", "attempts",
            "next_attempt_at", "created_at")

"""Intake: store an accepted message, one delivery per recipient, and `accepted` events.

All in one transaction: once the API has answered "Queued", the message will be tried.
"""

from __future__ import annotations

import json
import time
from typing import Any

from mailbeacon.domains import Domain
from mailbeacon.events import EventType, MessageInfo, build_event
from mailbeacon.ids import new_id
from mailbeacon.send.submission import Submission, build_mime, check_submission, normalize_tags
from mailbeacon.storage.db import Database
from mailbeacon.storage.records import write_events
from mailbeacon.storage.schema import deliveries, messages


def accept(db: Database, domain: Domain, sub: Submission, method: str = "http") -> str:
    """Queue the message; returns its Message-ID (without <>)."""
    check_submission(sub)
    now = time.time()
    now_us = int(now * 1_000_000)
    message_id = f"{new_id(now_us)}@{domain.name}"
    tags = normalize_tags(sub.tags)
    mime = build_mime(sub, message_id, now)
    headers = {
        "message-id": message_id,
        "from": str(mime["From"]),
        "to": str(mime["To"]),
        "subject": sub.subject,
    }
    info = MessageInfo(domain.name, message_id, sub.sender[1], headers, tags, sub.variables)
    row_id = new_id(now_us)
    recipients = sub.recipients()
    delivery_rows: list[dict[str, Any]] = [
        {"id": new_id(now_us), "message_id": row_id, "recipient": rcpt, "status": "queued",
         "attempts": 0, "next_attempt_at": now_us, "updated_at": now_us}
        for rcpt in recipients
    ]
    accepted = [
        build_event(
            EventType.ACCEPTED, now_us, info, row["recipient"], row["id"],
            method=method,
            envelope={"sender": sub.sender[1], "targets": row["recipient"],
                      "transport": "smtp"},
            flags={"is-authenticated": True, "is-test-mode": False},
        )
        for row in delivery_rows
    ]
    with db.write() as conn:
        conn.execute(messages.insert().values(
            id=row_id, domain=domain.name, message_id=message_id, created_at=now_us,
            sender=sub.sender[1], headers=json.dumps(headers), tags=json.dumps(tags),
            user_variables=json.dumps(sub.variables), options=json.dumps(sub.options.to_json()),
            mime=mime.as_bytes()))
        conn.execute(deliveries.insert(), delivery_rows)
        write_events(conn, accepted)
    return message_id

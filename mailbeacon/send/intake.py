"""Intake: store an accepted message, one delivery per recipient, and `accepted` events.

All in one transaction: once the API (or the SMTP server) has answered "Queued", the
message will be tried. Both paths meet in `store_message`: the form API builds MIME from
fields (`accept`), raw MIME arrives through `messages.mime` and SMTP (`accept_mime`).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, getaddresses
from typing import Any

from sqlalchemy import Connection

from mailbeacon.domains import Domain
from mailbeacon.errors import BadRequest
from mailbeacon.events import EventType, MessageInfo, build_event
from mailbeacon.ids import new_id
from mailbeacon.send.submission import (
    MAX_RECIPIENTS,
    DeliveryOptions,
    Submission,
    TrackingOptions,
    build_mime,
    check_submission,
    check_tags,
    normalize_tags,
)
from mailbeacon.storage.db import Database, conflict_insert
from mailbeacon.storage.records import write_events
from mailbeacon.storage.schema import contacts, deliveries, messages
from mailbeacon.tags import touch_tags

_MESSAGE_ID = re.compile(r"^<([^<>@\s]+@[^<>@\s]+)>$")


def accept(db: Database, domain: Domain, sub: Submission, method: str = "http") -> str:
    """Queue a message given as fields; returns its Message-ID (without <>)."""
    check_submission(sub)
    now = time.time()
    message_id = f"{new_id(int(now * 1_000_000))}@{domain.name}"
    mime = build_mime(sub, message_id, now)
    return store_message(db, domain, mime, message_id, sub.sender[1], sub.recipients(),
                         sub.tags, sub.variables, sub.options, sub.delivery, method)


def accept_mime(db: Database, domain: Domain, raw: bytes, sender: str | None,
                recipients: Sequence[str], tags: Sequence[str], variables: dict[str, Any],
                options: TrackingOptions, delivery: DeliveryOptions,
                method: str = "http") -> str:
    """Queue a message given as raw MIME (messages.mime, SMTP submission)."""
    msg = message_from_bytes(raw, _class=EmailMessage, policy=SMTP)
    assert isinstance(msg, EmailMessage)
    if msg.defects and not msg.keys():
        raise BadRequest("'message' is not a MIME message")
    if not recipients:
        raise BadRequest("'to' parameter is missing")
    if len(recipients) > MAX_RECIPIENTS:
        raise BadRequest(f"Too many recipients: at most {MAX_RECIPIENTS} per message")
    check_tags(list(tags))
    if sender is None:
        froms = getaddresses([str(msg.get("From", ""))])
        sender = froms[0][1] if froms and froms[0][1] else ""
    if "@" not in sender:
        raise BadRequest("the message has no usable From address")
    del msg["Bcc"]  # recipients come from the envelope; a Bcc header must not travel
    now = time.time()
    found = _MESSAGE_ID.match(str(msg.get("Message-ID", "")).strip())
    if found:
        message_id = found.group(1)
    else:
        message_id = f"{new_id(int(now * 1_000_000))}@{domain.name}"
        del msg["Message-ID"]
        msg["Message-ID"] = f"<{message_id}>"
    if "Date" not in msg:
        msg["Date"] = formatdate(now)
    return store_message(db, domain, msg, message_id, sender, list(recipients), list(tags),
                         variables, options, delivery, method)


def store_message(db: Database, domain: Domain, mime: EmailMessage, message_id: str,
                  sender: str, recipients: list[str], tags: list[str],
                  variables: dict[str, Any], options: TrackingOptions,
                  delivery: DeliveryOptions, method: str) -> str:
    now_us = time.time_ns() // 1000
    tags = normalize_tags(tags)
    headers = {
        "message-id": message_id,
        "from": str(mime.get("From", "")),
        "to": str(mime.get("To", "")),
        "subject": str(mime.get("Subject", "")),
    }
    list_id = str(mime.get("List-Id", "")).strip()
    if list_id:  # scope of %mailing_list_unsubscribe_url%
        headers["list-id"] = list_id[list_id.rfind("<") + 1:].rstrip(">").strip().lower()
    info = MessageInfo(domain.name, message_id, sender, headers, tags, variables)
    row_id = new_id(now_us)
    due = max(now_us, delivery.deliver_at or 0)
    delivery_rows: list[dict[str, Any]] = [
        {"id": new_id(now_us), "message_id": row_id, "recipient": rcpt, "status": "queued",
         "attempts": 0, "next_attempt_at": due, "updated_at": now_us}
        for rcpt in _unique(recipients)
    ]
    flags = {"is-authenticated": True, "is-test-mode": delivery.testmode}
    accepted = [
        build_event(
            EventType.ACCEPTED, now_us, info, row["recipient"], row["id"], method=method,
            envelope={"sender": sender, "targets": row["recipient"], "transport": "smtp"},
            flags=flags,
        )
        for row in delivery_rows
    ]
    with db.write() as conn:
        conn.execute(messages.insert().values(
            id=row_id, domain=domain.name, message_id=message_id, created_at=now_us,
            sender=sender, headers=json.dumps(headers), tags=json.dumps(tags),
            user_variables=json.dumps(variables), options=json.dumps(options.to_json()),
            recipient_variables=json.dumps(delivery.recipient_variables)
            if delivery.recipient_variables is not None else None,
            testmode=delivery.testmode, mime=mime.as_bytes()))
        conn.execute(deliveries.insert(), delivery_rows)
        touch_tags(conn, domain.name, tags, now_us)
        touch_contacts(conn, domain.name, [r["recipient"] for r in delivery_rows], now_us)
        write_events(conn, accepted)
    return message_id


def touch_contacts(conn: Connection, domain: str, addresses: Sequence[str], ts: int) -> None:
    """A contact row for each address the domain sends to (kept if it exists)."""
    rows = [{"domain": domain, "address": a, "created_at": ts}
            for a in sorted({a.lower() for a in addresses})]
    if rows:
        conn.execute(conflict_insert(conn, contacts).on_conflict_do_nothing(), rows)


def _unique(addresses: list[str]) -> list[str]:
    """Every envelope recipient once (case-insensitively), in the order given."""
    seen: dict[str, str] = {}
    for address in addresses:
        seen.setdefault(address.lower(), address)
    return list(seen.values())

"""Mail that comes back to mailbeacon: bounces, complaints and mailto unsubscribes.

It arrives at the bounce domains, through the SMTP server (no AUTH needed) or a polled
mailbox, and goes through one path: keep the raw message, parse it, match each finding to
the delivery it is about, and act on it, all in one transaction (so a message fetched
twice from a mailbox is acted on once).

Matching (DESIGN 7): the VERP token of the address it came to (`bounce+<token>@...`),
else our `X-Mailbeacon-Delivery` header or the Message-ID in the returned original, else
the newest delivery to the failed address.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from email.policy import compat32
from email.utils import getaddresses
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.exc import IntegrityError

from mailbeacon import suppressions
from mailbeacon.domains import Domain
from mailbeacon.errors import TokenError
from mailbeacon.events import EventRecord, EventType, MessageInfo, Severity, build_event
from mailbeacon.ids import ID_LENGTH, new_id
from mailbeacon.inbound.parser import Kind as ReportKind
from mailbeacon.inbound.parser import Result, parse
from mailbeacon.inbound.reasons import Category
from mailbeacon.storage.db import Database, now_us
from mailbeacon.storage.records import write_events
from mailbeacon.storage.schema import (
    deliveries,
    domains,
    inbound_messages,
    messages,
    soft_bounces,
)
from mailbeacon.suppressions import SuppressionKind
from mailbeacon.track.hits import Hit, engage, mark_bounced
from mailbeacon.track.recorder import Recorder
from mailbeacon.track.tokens import Kind, Token, TokenCodec

log = logging.getLogger("mailbeacon.inbound")
_OURS = re.compile(r"^(bounce|unsub)\+([a-z2-7]+)@(.+)$", re.I)
# Headers that may name the address a polled mailbox received a message for.
_ADDRESS_HEADERS = ("To", "Cc", "Delivered-To", "X-Original-To", "Envelope-To")
_DELIVERY_ID = re.compile(r"^[0-9a-v]{26}$")


@dataclass(frozen=True)
class Match:
    delivery_id: str
    recipient: str
    row: Any  # the message row
    how: str  # verp | header | message-id | address


class InboundReceiver:
    def __init__(self, db: Database, codec: TokenCodec, recorder: Recorder) -> None:
        self._db = db
        self._codec = codec
        self._recorder = recorder
        self.received = 0  # messages taken in, for logs and tests
        self.failed = 0  # messages that could not be processed (kept, status error)

    def token(self, address: str) -> Token | None:
        """The verified token of one of our addresses, or None."""
        match = _OURS.match(address.strip())
        if match is None:
            return None
        try:
            token = self._codec.decode(match.group(2))
        except TokenError:
            return None
        wanted = Kind.BOUNCE if match.group(1).lower() == "bounce" else Kind.UNSUBSCRIBE
        return token if token.kind is wanted else None

    def bounce_domains(self) -> set[str]:
        with self._db.read() as conn:
            rows = conn.execute(select(domains.c.name, domains.c.bounce_domain)).all()
        return {(r.bounce_domain or r.name).lower() for r in rows}

    def accepts(self, address: str) -> bool:
        """Whether mail for `address` is ours to take without authentication."""
        host = address.rpartition("@")[2].lower().rstrip(".")
        return host in self.bounce_domains()

    async def receive(self, data: bytes, recipients: Iterable[str] = (), sender: str = "",
                      source: str = "smtp") -> str:
        """Act on one returning message; returns its status (processed, ignored,
        unmatched, duplicate, error). Raises only when the database is unavailable, so
        the sender (SMTP client, mailbox) keeps the message and tries again."""
        self.received += 1
        message = message_from_bytes(data, policy=compat32)
        addresses = list(dict.fromkeys(a.lower() for a in
                                       [*recipients, *_header_addresses(message)]))
        tokens = [t for t in map(self.token, addresses) if t is not None]
        unsubscribe = next((t for t in tokens if t.kind is Kind.UNSUBSCRIBE), None)
        if unsubscribe is not None:
            await self._recorder.record(Hit(
                Kind.UNSUBSCRIBE, unsubscribe.delivery_id, time.time_ns() // 1000, "", "",
                "MAIL", scope=unsubscribe.scope))
            return await asyncio.to_thread(self._keep, data, recipients, sender, source,
                                           "processed", "unsubscribe", {})
        try:
            results = await asyncio.to_thread(parse, data)
        except Exception as exc:  # the parser promises not to; keep the mail if it does
            log.exception("parser failed on a returning message")
            self.failed += 1
            return await asyncio.to_thread(self._keep, data, recipients, sender, source,
                                           "error", "", {"error": repr(exc)})
        verp = [t.delivery_id for t in tokens if t.kind is Kind.BOUNCE]
        if all(r.kind is ReportKind.NOT_A_REPORT for r in results):
            replied = await asyncio.to_thread(self._reply, data, message, list(recipients),
                                              sender, source)
            if replied is not None:
                return replied
        return await asyncio.to_thread(self._apply, data, list(recipients), sender, source,
                                       results, verp)

    def _reply(self, data: bytes, message: Message, recipients: list[str], sender: str,
               source: str) -> str | None:
        """A person's reply to one of our messages: the strongest engagement signal."""
        refs = re.findall(r"<([^<>\s]+)>", " ".join(
            str(message.get(h, "")) for h in ("In-Reply-To", "References")))
        froms = getaddresses([str(message.get("From", ""))])
        author = froms[0][1].lower() if froms and froms[0][1] else ""
        if not refs or not author:
            return None
        now = now_us()
        with self._db.write() as conn:
            found = conn.execute(
                select(deliveries.c.id.label("delivery_id"), deliveries.c.recipient, messages)
                .join(messages, messages.c.id == deliveries.c.message_id)
                .where(messages.c.message_id.in_(refs[-20:]),
                       func.lower(deliveries.c.recipient) == author)
                .order_by(deliveries.c.id.desc()).limit(1)).first()
            if found is None:
                return None
            info = MessageInfo.from_row(found)
            status = self._keep(data, recipients, sender, source, "processed", "reply",
                                {"delivery": found.delivery_id}, conn)
            if status == "duplicate":
                return status
            engage(conn, info.domain, author, "reply", 1, now)
            write_events(conn, [build_event(EventType.REPLIED, now, info, found.recipient,
                                            found.delivery_id, method="MAIL")])
        return "processed"

    def _keep(self, data: bytes, recipients: Iterable[str], sender: str, source: str,
              status: str, kind: str, detail: dict[str, Any],
              conn: Connection | None = None) -> str:
        row = {"id": new_id(), "received_at": now_us(), "source": source,
               "mail_from": sender, "recipients": json.dumps(list(recipients)),
               "sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "raw": data,
               "status": status, "kind": kind, "detail": json.dumps(detail)}
        try:
            if conn is not None:
                conn.execute(inbound_messages.insert().values(**row))
            else:
                with self._db.write() as own:
                    own.execute(inbound_messages.insert().values(**row))
        except IntegrityError:
            return "duplicate"
        return status

    def _apply(self, data: bytes, recipients: list[str], sender: str, source: str,
               results: Sequence[Result], verp: list[str]) -> str:
        actionable = [r for r in results if _actionable(r)]
        kind = results[0].kind.value if results else ""
        if not actionable:
            return self._keep(data, recipients, sender, source, "ignored", kind,
                              {"results": [r.to_json() for r in results]})
        now = now_us()
        try:
            with self._db.write() as conn:
                if conn.execute(select(inbound_messages.c.id).where(
                        inbound_messages.c.sha256 == hashlib.sha256(data).hexdigest())
                ).first():
                    return "duplicate"  # fetched again from a mailbox: acted on already
                records: list[EventRecord] = []
                matched: list[dict[str, Any]] = []
                for result in actionable:
                    found = _match(conn, result, verp, len(actionable) == 1)
                    matched.append({**result.to_json(),
                                    "match": found.how if found else None,
                                    "delivery": found.delivery_id if found else None})
                    if found is not None:
                        records.append(_effects(conn, result, found, now))
                status = "processed" if records else "unmatched"
                self._keep(data, recipients, sender, source, status, kind,
                           {"results": matched}, conn)
                write_events(conn, records)
        except IntegrityError:
            return "duplicate"  # a concurrent copy of the same message won
        return status


# Feedback reports that are not a person's complaint: DMARC/DKIM failure reports.
_NOT_COMPLAINTS = {"auth-failure", "dkim", "dmarc"}
# Feedback that asks to stop rather than reports spam (ARF opt-out).
_OPT_OUT = {"opt-out", "unsubscribe"}


def _actionable(result: Result) -> bool:
    if result.kind is ReportKind.COMPLAINT:
        return (result.feedback_type.lower() not in _NOT_COMPLAINTS
                and bool(result.recipient or result.original_headers))
    return result.kind is ReportKind.BOUNCE and result.action not in (
        "delivered", "relayed", "expanded")


def _match(conn: Connection, result: Result, verp: list[str], single: bool) -> Match | None:
    """The delivery a finding is about, by the most exact evidence available."""
    recipient = result.recipient.lower()

    def delivery(where: Any, how: str) -> Match | None:
        row = conn.execute(
            select(deliveries.c.id.label("delivery_id"), deliveries.c.recipient, messages)
            .join(messages, messages.c.id == deliveries.c.message_id)
            .where(where).order_by(deliveries.c.id.desc()).limit(1)).first()
        return Match(row.delivery_id, row.recipient, row, how) if row else None

    for delivery_id in verp:
        found = delivery(deliveries.c.id == delivery_id, "verp")
        if found and (single or not recipient or found.recipient.lower() == recipient):
            return found
    header_id = result.original_headers.get("x-mailbeacon-delivery", "").strip().lower()
    if _DELIVERY_ID.match(header_id) and len(header_id) == ID_LENGTH:
        found = delivery(deliveries.c.id == header_id, "header")
        if found and (not recipient or found.recipient.lower() == recipient):
            return found
    if not recipient:
        return None
    lowered = func.lower(deliveries.c.recipient) == recipient
    if result.original_message_id:
        found = delivery(lowered & (messages.c.message_id == result.original_message_id),
                         "message-id")
        if found:
            return found
    return delivery(lowered, "address")


def _effects(conn: Connection, result: Result, found: Match, now: int) -> EventRecord:
    """The event for one finding, and the suppression it calls for."""
    info = MessageInfo.from_row(found.row)
    domain = Domain.from_row(conn.execute(
        select(domains).where(domains.c.name == info.domain)).one())
    address = found.recipient
    if result.kind is ReportKind.COMPLAINT and result.feedback_type.lower() in _OPT_OUT:
        suppressions.add(conn, domain.name, SuppressionKind.UNSUBSCRIBE, address, now,
                         tag=suppressions.ALL_SCOPE)
        return build_event(EventType.UNSUBSCRIBED, now, info, address, found.delivery_id,
                           method="MAIL", unsubscribe_scope=[suppressions.ALL_SCOPE],
                           feedback_type=result.feedback_type)
    if result.kind is ReportKind.COMPLAINT:
        if not _allowlisted(conn, domain.name, address):
            suppressions.add(conn, domain.name, SuppressionKind.COMPLAINT, address, now)
        return build_event(EventType.COMPLAINED, now, info, address, found.delivery_id,
                           feedback_type=result.feedback_type, reporter=result.reporter)
    code = result.reply_code or ("550" if result.permanent else "450")
    if result.permanent:
        mark_bounced(conn, found.delivery_id, info.domain, address)
    if result.category is Category.HARD and result.permanent:
        if not _allowlisted(conn, domain.name, address):
            suppressions.add(conn, domain.name, SuppressionKind.BOUNCE, address, now,
                             code=code, error=result.diagnostic)
    elif result.category is Category.SOFT and result.action != "delayed":
        # A delay notice says the remote server is still trying: not a bounce yet.
        _count_soft_bounce(conn, domain, address, code, result.diagnostic, now)
    severity = Severity.PERMANENT if result.permanent else Severity.TEMPORARY
    return build_event(
        EventType.FAILED, now, info, address, found.delivery_id, severity=severity,
        reason=result.reason or "bounce",
        delivery_status={
            "code": int(result.reply_code) if result.reply_code.isdigit() else 0,
            "enhanced-code": result.status, "message": result.diagnostic,
            "description": f"{result.category or 'unknown'} bounce reported by "
                           f"{result.remote_mta or 'a remote server'}",
            "remote-mta": result.remote_mta, "bounce-category": str(result.category or ""),
        },
        flags={"is-delayed-bounce": True}, bounce_match=found.how,
    )


def _allowlisted(conn: Connection, domain: str, address: str) -> bool:
    return bool(suppressions.allowlisted(conn, domain, [address]))


def _count_soft_bounce(conn: Connection, domain: Domain, address: str, code: str,
                       error: str, now: int) -> None:
    """One more soft bounce; at the domain's limit the address is suppressed."""
    address = address.lower()
    row = conn.execute(select(soft_bounces.c.count).where(
        soft_bounces.c.domain == domain.name, soft_bounces.c.address == address)).first()
    count = (int(row[0]) if row else 0) + 1
    if row:
        conn.execute(soft_bounces.update().where(
            soft_bounces.c.domain == domain.name, soft_bounces.c.address == address
        ).values(count=count, last_at=now))
    else:
        conn.execute(soft_bounces.insert().values(domain=domain.name, address=address,
                                                  count=count, last_at=now))
    if count >= domain.soft_bounce_limit and not _allowlisted(conn, domain.name, address):
        suppressions.add(conn, domain.name, SuppressionKind.BOUNCE, address, now, code=code,
                         error=f"{count} soft bounces (limit {domain.soft_bounce_limit}): "
                               f"{error}")


def _header_addresses(message: Message) -> list[str]:
    values = [str(v) for name in _ADDRESS_HEADERS for v in message.get_all(name, [])]
    return [address for _, address in getaddresses(values) if address]

"""Mail that comes back to mailbeacon: bounces, complaints, replies and mailto unsubscribes.

It arrives at the bounce domains, through the SMTP server (no AUTH needed) or a polled
mailbox, and goes through one path: keep the raw message, parse it (in a thread, bounded:
see `message.trim_parts`), tie each finding to the delivery it is about, and act on it,
all in one transaction (so a message fetched twice from a mailbox is acted on once).

Trust (DESIGN 7, `ties`): a finding has effects only when tied to a real delivery of a
domain the report was addressed to, by a VERP token or by the delivery's Message-ID. A
report that cannot be tied is kept with status `unmatched` and changes nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.exc import IntegrityError

from mailbeacon.domains.domain import Domain
from mailbeacon.errors import TokenError
from mailbeacon.events.vocabulary import EventRecord, EventType, MessageInfo, Severity, build_event
from mailbeacon.events.writer import HOUR_US, write_events
from mailbeacon.inbound.message import MAX_PART_HEADER_BYTES
from mailbeacon.inbound.parser import Kind as ReportKind
from mailbeacon.inbound.parser import Result, parse
from mailbeacon.inbound.ties import Match, reply_tie, tie
from mailbeacon.insight.activity import engage, mark_bounced
from mailbeacon.insight.stats import UNMATCHED_REPORT
from mailbeacon.model.clock import now_us
from mailbeacon.model.hit import Hit, HitSink
from mailbeacon.model.ids import new_id
from mailbeacon.model.tokens import Kind, Token, TokenCodec
from mailbeacon.storage.db import Database, upsert_add
from mailbeacon.storage.schema import domains, inbound_messages, stats_buckets
from mailbeacon.suppress import rules as suppressions
from mailbeacon.suppress.effects import allowlisted, apply_failure
from mailbeacon.suppress.rules import SuppressionKind

log = logging.getLogger("mailbeacon.inbound")
_OURS = re.compile(r"^(bounce|unsub)\+([a-z2-7]+)@(.+)$", re.I)
# Headers that may name the address a polled mailbox received a message for.
_ADDRESS_HEADERS = ("To", "Cc", "Delivered-To", "X-Original-To", "Envelope-To")
_REFERENCE = re.compile(r"<([^<>\s]{1,250})>")


@dataclass(frozen=True)
class Arrival:
    """One returning message as read (off the event loop): who it came to, the tokens it
    carries, the domains it may speak about, and what the parser found in it."""

    data: bytes
    recipients: list[str]  # the envelope recipients (SMTP); none from a mailbox
    sender: str
    source: str  # smtp | mailbox
    hosts: list[str]  # bounce hosts it was addressed to
    tokens: list[Token]  # verified tokens of the addresses it came to
    results: list[Result]
    references: list[str]  # In-Reply-To and References, without <>
    author: str  # the From address, lower-cased
    error: str = ""  # the parser failed (it promises not to)


class InboundReceiver:
    def __init__(self, db: Database, codec: TokenCodec, recorder: HitSink) -> None:
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
        return _host(address) in self.bounce_domains()

    async def receive(self, data: bytes, recipients: Iterable[str] = (), sender: str = "",
                      source: str = "smtp") -> str:
        """Act on one returning message; returns its status (processed, ignored,
        unmatched, duplicate, error). Raises only when the database is unavailable, so
        the sender (SMTP client, mailbox) keeps the message and tries again."""
        self.received += 1
        arrival = await asyncio.to_thread(self.read, data, list(recipients), sender, source)
        unsubscribe = next((t for t in arrival.tokens if t.kind is Kind.UNSUBSCRIBE), None)
        if unsubscribe is not None:
            await self._recorder.record(Hit(
                Kind.UNSUBSCRIBE, unsubscribe.delivery_id, now_us(), "", "",
                "MAIL", scope=unsubscribe.scope))
            return await asyncio.to_thread(self._keep, arrival, "processed", "unsubscribe", {})
        if arrival.error:
            self.failed += 1
            return await asyncio.to_thread(self._keep, arrival, "error", "",
                                           {"error": arrival.error})
        return await asyncio.to_thread(self._apply, arrival)

    def read(self, data: bytes, recipients: list[str], sender: str, source: str) -> Arrival:
        """Everything `receive` needs from the raw message; blocking (parses)."""
        head = _headers(data)
        named = [a.lower() for a in recipients] or _header_addresses(head)
        addresses = list(dict.fromkeys([*named, *_header_addresses(head)]))
        tokens = [t for t in map(self.token, addresses) if t is not None]
        error = ""
        results: list[Result] = []
        if not any(t.kind is Kind.UNSUBSCRIBE for t in tokens):
            try:
                results = parse(data)
            except Exception as exc:  # the parser promises not to; keep the mail if it does
                log.exception("parser failed on a returning message")
                error = repr(exc)
        froms = getaddresses([str(head.get("From", ""))])
        references = _REFERENCE.findall(" ".join(
            str(head.get(h, "")) for h in ("In-Reply-To", "References")))
        bounce_hosts = self.bounce_domains()
        hosts = [h for h in dict.fromkeys(map(_host, named)) if h in bounce_hosts]
        return Arrival(data, recipients, sender, source, hosts, tokens, results, references,
                       froms[0][1].lower() if froms and froms[0][1] else "", error)

    def _scope(self, conn: Connection, arrival: Arrival) -> set[str]:
        """The domains a report may speak about: those whose bounce domain it came to."""
        rows = conn.execute(select(domains.c.name, domains.c.bounce_domain)).all()
        return {r.name for r in rows if (r.bounce_domain or r.name).lower() in arrival.hosts}

    def _keep(self, arrival: Arrival, status: str, kind: str, detail: dict[str, Any],
              conn: Connection | None = None) -> str:
        data = arrival.data
        row = {"id": new_id(), "received_at": now_us(), "source": arrival.source,
               "mail_from": arrival.sender, "recipients": arrival.recipients,
               "host": arrival.hosts[0] if arrival.hosts else "",
               "sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "raw": data,
               "status": status, "kind": kind, "detail": detail}
        try:
            if conn is not None:
                conn.execute(inbound_messages.insert().values(**row))
            else:
                with self._db.write() as own:
                    own.execute(inbound_messages.insert().values(**row))
        except IntegrityError:
            return "duplicate"
        return status

    def _apply(self, arrival: Arrival) -> str:
        results = arrival.results
        kind = results[0].kind.value if results else ""
        actionable = [r for r in results if _actionable(r)]
        reply = (all(r.kind is ReportKind.NOT_A_REPORT for r in results)
                 and bool(arrival.references and arrival.author))
        if not actionable and not reply:
            return self._keep(arrival, "ignored", kind,
                              {"results": [r.to_json() for r in results]})
        now = now_us()
        verp = [t.delivery_id for t in arrival.tokens if t.kind is Kind.BOUNCE]
        try:
            with self._db.write() as conn:
                if conn.execute(select(inbound_messages.c.id).where(
                        inbound_messages.c.sha256 == hashlib.sha256(arrival.data).hexdigest())
                ).first():
                    return "duplicate"  # fetched again from a mailbox: acted on already
                scope = self._scope(conn, arrival)
                if reply:
                    found = reply_tie(conn, arrival.references, arrival.author, scope)
                    records = [] if found is None else [_replied(conn, found, now)]
                    kind, matched = "reply", [{"kind": "reply", "recipient": arrival.author,
                                               **_how(found)}]
                else:
                    records, matched = [], []
                    for result in actionable:
                        found = tie(conn, result, verp, scope, len(actionable) == 1)
                        matched.append({**result.to_json(), **_how(found)})
                        if found is not None and result.kind is not ReportKind.AUTO_REPLY:
                            records.append(_effects(conn, result, found, now))
                tied = any(m["match"] for m in matched)
                status = "processed" if tied else "unmatched"
                self._keep(arrival, status, kind, {"results": matched}, conn)
                if not tied:
                    _count_unmatched(conn, scope, now)
                write_events(conn, records)
        except IntegrityError:
            return "duplicate"  # a concurrent copy of the same message won
        return status


def _count_unmatched(conn: Connection, scope: set[str], now: int) -> None:
    """Count an untied report in the stats of the domains it was addressed to."""
    upsert_add(conn, stats_buckets,
               [{"domain": name, "tag": "", "event": UNMATCHED_REPORT,
                 "hour": now // HOUR_US * 3600, "count": 1, "human_count": 0}
                for name in sorted(scope)],
               keys=("domain", "tag", "event", "hour"), add=("count", "human_count"))


def _how(found: Match | None) -> dict[str, Any]:
    return {"match": found.how if found else None,
            "delivery": found.delivery_id if found else None}


def _replied(conn: Connection, found: Match, now: int) -> EventRecord:
    """A person's reply to one of our messages: the strongest engagement signal."""
    info = MessageInfo.from_row(found.row)
    engage(conn, info.domain, found.recipient.lower(), "reply", 1, now)
    return build_event(EventType.REPLIED, now, info, found.recipient, found.delivery_id,
                       method="MAIL")


# Feedback reports that are not a person's complaint: DMARC/DKIM failure reports.
_NOT_COMPLAINTS = {"auth-failure", "dkim", "dmarc"}
# Feedback that asks to stop rather than reports spam (ARF opt-out).
_OPT_OUT = {"opt-out", "unsubscribe"}


def _actionable(result: Result) -> bool:
    """Worth tying to a delivery: a failure, a complaint, or an auto-reply (tied, so the
    record says which message it answered, but with no effect)."""
    if result.kind is ReportKind.AUTO_REPLY:
        return True
    if result.kind is ReportKind.COMPLAINT:
        return (result.feedback_type.lower() not in _NOT_COMPLAINTS
                and bool(result.recipient or result.original_headers))
    return result.kind is ReportKind.BOUNCE and result.action not in (
        "delivered", "relayed", "expanded")


def _effects(conn: Connection, result: Result, found: Match, now: int) -> EventRecord:
    """The event for one tied finding, and the suppression it calls for."""
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
        if not allowlisted(conn, domain.name, address):
            suppressions.add(conn, domain.name, SuppressionKind.COMPLAINT, address, now)
        return build_event(EventType.COMPLAINED, now, info, address, found.delivery_id,
                           feedback_type=result.feedback_type, reporter=result.reporter)
    if result.permanent:
        mark_bounced(conn, found.delivery_id, info.domain, address)
    # A delay notice says the remote server is still trying: not a bounce yet.
    apply_failure(conn, domain, address, result, now, counts=result.action != "delayed")
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


def _host(address: str) -> str:
    return address.strip().rpartition("@")[2].lower().rstrip(".>")


def _headers(data: bytes) -> Message:
    """The top-level headers only (a header block is small; the body is never read)."""
    end = data.find(b"\n\n")
    crlf = data.find(b"\r\n\r\n")
    cut = min(x for x in (end, crlf, len(data)) if x >= 0)
    return BytesHeaderParser(policy=compat32).parsebytes(
        data[:min(cut, MAX_PART_HEADER_BYTES)])


def _header_addresses(message: Message) -> list[str]:
    values = [str(v) for name in _ADDRESS_HEADERS for v in message.get_all(name, [])]
    return [address.lower() for _, address in getaddresses(values) if address]

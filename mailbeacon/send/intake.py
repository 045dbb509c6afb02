"""Intake: store an accepted message, one delivery per recipient, and `accepted` events.

All in one transaction: once the API (or the SMTP server) has answered "Queued", the
message will be tried. Both paths meet in `store_message`: the form API builds MIME from
fields (`accept`), raw MIME arrives through `messages.mime` and SMTP (`accept_mime`).
The rows are made in the caller's thread; `IntakeWriter` then commits the messages of
concurrent requests together (group commit), each request returning once its own
transaction has committed.
"""

from __future__ import annotations

import codecs
import copy
import json
import logging
import re
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from email import message_from_bytes
from email.message import EmailMessage
from email.utils import formatdate, getaddresses
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from mailbeacon.domains.domain import Domain
from mailbeacon.errors import BadRequest
from mailbeacon.events.vocabulary import EventRecord, EventType, MessageInfo, build_event
from mailbeacon.events.writer import write_events
from mailbeacon.insight.tags import touch_tags
from mailbeacon.model.ids import message_id_local, new_id
from mailbeacon.model.tags import check_tags, normalize_tags
from mailbeacon.send.compose import POLICY, substitute_variables
from mailbeacon.send.headers import MAX_MIME_DEPTH, UNTRUSTED_IN_MIME, check_value, mime_depth
from mailbeacon.send.submission import (
    MAX_RECIPIENTS,
    DeliveryOptions,
    Submission,
    TrackingOptions,
    build_mime,
    check_submission,
)
from mailbeacon.storage.db import Database, conflict_insert
from mailbeacon.storage.schema import contacts, deliveries, messages

_MESSAGE_ID = re.compile(r"^<([^<>@\s]+@[^<>@\s]+)>$")
_FOLD = re.compile(r"\r?\n(?=[ \t])")  # a folded header's line breaks
# A batch holds whole messages up to this many recipients (at least one message).
MAX_BATCH_ROWS = 2000
log = logging.getLogger("mailbeacon.intake")


def accept(db: Database, domain: Domain, sub: Submission, method: str = "http") -> str:
    """Queue a message given as fields; returns its Message-ID (without <>)."""
    check_submission(sub)
    check_recipient_variables(str(POLICY.header_factory("Subject", sub.subject)),
                              sub.delivery.recipient_variables, sub.recipients())
    now = time.time()
    message_id = f"{message_id_local(int(now * 1_000_000))}@{domain.name}"
    mime = build_mime(sub, message_id, now)
    return store_message(db, domain, mime, message_id, sub.sender[1], sub.recipients(),
                         sub.tags, sub.variables, sub.options, sub.delivery, method)


def accept_mime(db: Database, domain: Domain, raw: bytes, sender: str | None,
                recipients: Sequence[str], tags: Sequence[str], variables: dict[str, Any],
                options: TrackingOptions, delivery: DeliveryOptions,
                method: str = "http") -> str:
    """Queue a message given as raw MIME (messages.mime, SMTP submission)."""
    msg = parse_submitted(raw)
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
    check_recipient_variables(str(msg.get("Subject", "")), delivery.recipient_variables,
                              list(recipients))
    now = time.time()
    found = _MESSAGE_ID.match(str(msg.get("Message-ID", "")).strip())
    if found:
        message_id = found.group(1)
    else:
        message_id = f"{message_id_local(int(now * 1_000_000))}@{domain.name}"
        del msg["Message-ID"]
        msg["Message-ID"] = f"<{message_id}>"
    if "Date" not in msg:
        msg["Date"] = formatdate(now)
    return store_message(db, domain, msg, message_id, sender, list(recipients), list(tags),
                         variables, options, delivery, method)


def parse_submitted(raw: bytes) -> EmailMessage:
    """Submitted MIME, checked as every message we relay must be: BadRequest for MIME
    nested deeper than MAX_MIME_DEPTH, a part in a charset Python does not know, or a
    header holding control characters (after decoding). Trust headers of the sender's
    (DKIM-Signature, ARC-*, Authentication-Results, Return-Path) are dropped."""
    try:
        msg = message_from_bytes(raw, _class=EmailMessage, policy=POLICY)
    except RecursionError as exc:
        raise BadRequest(f"'message' nests MIME parts deeper than {MAX_MIME_DEPTH} "
                         "levels") from exc
    assert isinstance(msg, EmailMessage)
    if msg.defects and not msg.keys():
        raise BadRequest("'message' is not a MIME message")
    if mime_depth(msg) > MAX_MIME_DEPTH:
        raise BadRequest(f"'message' nests MIME parts deeper than {MAX_MIME_DEPTH} levels")
    for name in {n.lower() for n in msg}:
        if name in UNTRUSTED_IN_MIME or name.startswith("arc-"):
            del msg[name]
    for number, part in enumerate(msg.walk()):
        where = "" if number == 0 else f" of MIME part {number}"
        for name, value in part.raw_items():
            unfolded = _FOLD.sub("", str(value))
            check_value(f"header '{name}'{where}", name, unfolded)
        charset = part.get_content_charset()
        if charset:
            try:
                codecs.lookup(charset)
            except LookupError as exc:
                raise BadRequest(f"MIME part {number} ({part.get_content_type()}) has an "
                                 f"unknown charset {charset!r}") from exc
    return msg


def check_recipient_variables(subject: str, variables: dict[str, dict[str, Any]] | None,
                              recipients: Sequence[str]) -> None:
    """Each recipient's subject, their values substituted, must be a valid header value
    (values reach headers only through %recipient.NAME% in the subject)."""
    if not variables or "%recipient." not in subject:
        return
    for rcpt in recipients:
        own = variables.get(rcpt.lower())
        if own:
            check_value("'recipient-variables' (in the subject)", "Subject",
                        substitute_variables(subject, own), f" for {rcpt}")


def store_message(db: Database, domain: Domain, mime: EmailMessage, message_id: str,
                  sender: str, recipients: list[str], tags: list[str],
                  variables: dict[str, Any], options: TrackingOptions,
                  delivery: DeliveryOptions, method: str) -> str:
    """Store the message, its deliveries and `accepted` events; returns once committed."""
    intake_writer(db).store(_prepare(domain, mime, message_id, sender, recipients, tags,
                                     variables, options, delivery, method))
    return message_id


@dataclass(frozen=True)
class Intake:
    """The rows of one accepted message, made before any lock is taken."""

    message: dict[str, Any]
    deliveries: list[dict[str, Any]]
    tags: list[str]
    events: list[EventRecord]

    @property
    def domain(self) -> str:
        return str(self.message["domain"])

    @property
    def ts(self) -> int:
        return int(self.message["created_at"])


def _prepare(domain: Domain, mime: EmailMessage, message_id: str, sender: str,
             recipients: list[str], tags: list[str], variables: dict[str, Any],
             options: TrackingOptions, delivery: DeliveryOptions, method: str) -> Intake:
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
    message = {
        "id": row_id, "domain": domain.name, "message_id": message_id, "created_at": now_us,
        "sender": sender, "headers": json.dumps(headers), "tags": json.dumps(tags),
        "user_variables": json.dumps(variables), "options": json.dumps(options.to_json()),
        "recipient_variables": json.dumps(delivery.recipient_variables)
        if delivery.recipient_variables is not None else None,
        "testmode": delivery.testmode, "mime": mime.as_bytes(),
    }
    return Intake(message, delivery_rows, tags, accepted)


def write_intakes(conn: Connection, batch: Sequence[Intake]) -> None:
    """Store accepted messages in the caller's transaction, in as few statements as the
    batch allows (one INSERT per table, one `write_events` for all their events)."""
    conn.execute(messages.insert(), [item.message for item in batch])
    rows = [row for item in batch for row in item.deliveries]
    if rows:
        conn.execute(deliveries.insert(), rows)
    for item in batch:
        touch_tags(conn, item.domain, item.tags, item.ts)
    contacts_seen: dict[tuple[str, str], int] = {}
    for item in batch:  # each contact once, with the time it was first sent to
        for row in item.deliveries:
            contacts_seen.setdefault((item.domain, row["recipient"].lower()), item.ts)
    if contacts_seen:
        conn.execute(conflict_insert(conn, contacts).on_conflict_do_nothing(), [
            {"domain": d, "address": a, "created_at": ts}
            for (d, a), ts in sorted(contacts_seen.items())])
    write_events(conn, [event for item in batch for event in item.events])


class _Ticket:
    """One request waiting in the intake queue."""

    __slots__ = ("error", "intake", "lead", "stored", "wake")

    def __init__(self, intake: Intake) -> None:
        self.intake = intake
        self.wake = threading.Event()  # set once settled, or made the next leader
        self.lead = False
        self.stored = False
        self.error: BaseException | None = None


class IntakeWriter:
    """Group commit for intake: the messages of concurrent requests in one transaction.

    Each request's thread queues its prepared rows and waits. When no batch is being
    written, the thread that arrives becomes the leader: it writes everything queued in
    one transaction, then hands the lead to the first request that queued meanwhile
    (that one writes the next batch at once: no timer) and wakes the requests of its
    batch. Under light load a batch is one message; under heavy load batches grow and
    the commits (and SQLite lock waits) per message shrink. A request returns only once
    its batch committed. If a batch fails, each message is tried again alone, so one bad
    message fails only its own request; a database that is away fails each.
    """

    def __init__(self, db: Database, max_rows: int = MAX_BATCH_ROWS) -> None:
        self._db = db
        self._max_rows = max_rows
        self._lock = threading.Lock()
        self._queue: deque[_Ticket] = deque()
        self._writing = False  # a leader is at work; newcomers wait to be woken
        self.batches = 0  # commits so far; messages / batches is the group-commit factor
        self.messages = 0

    @property
    def waiting(self) -> int:
        """Requests queued for the next batch."""
        return len(self._queue)

    def store(self, intake: Intake) -> None:
        """Return once the message is committed; raise what kept it from being stored."""
        ticket = _Ticket(intake)
        with self._lock:
            self._queue.append(ticket)
            lead = not self._writing
            self._writing = True
        if not lead:
            try:
                ticket.wake.wait()
            except BaseException:  # interrupted (main thread): the others must go on
                self._abandon(ticket)
                raise
            lead = ticket.lead
        if lead:
            self._lead()
        if not ticket.stored:
            assert ticket.error is not None
            raise ticket.error

    def _lead(self) -> None:
        """Write one batch (starting with the leader's own ticket), then pass the lead on."""
        with self._lock:
            batch = [self._queue.popleft()]
            rows = len(batch[0].intake.deliveries)
            while self._queue and rows + len(self._queue[0].intake.deliveries) <= self._max_rows:
                rows += len(self._queue[0].intake.deliveries)
                batch.append(self._queue.popleft())
        try:
            self._commit(batch)
        except BaseException as exc:  # e.g. KeyboardInterrupt: nobody waits forever
            for ticket in batch:
                if not ticket.stored and ticket.error is None:
                    ticket.error = exc
            raise
        finally:
            with self._lock:
                self._pass_lead()
            for ticket in batch:
                ticket.wake.set()

    def _pass_lead(self) -> None:
        """(Under the lock.) The next batch starts now, led by the first one waiting."""
        if self._queue:
            self._queue[0].lead = True
            self._queue[0].wake.set()
        else:
            self._writing = False

    def _abandon(self, ticket: _Ticket) -> None:
        """A waiting request went away: take it out of the queue (unless its batch is
        being written already), and if it had just been made leader, pass the lead on."""
        with self._lock:
            if ticket in self._queue:
                self._queue.remove(ticket)
                if ticket.lead:
                    self._pass_lead()

    def _commit(self, batch: list[_Ticket]) -> None:
        try:
            self._write([t.intake for t in batch])
        except Exception as exc:
            if len(batch) == 1 or not _may_be_one_message(exc):
                for ticket in batch:
                    ticket.error = exc if len(batch) == 1 else _own_copy(exc)
                return
            log.warning("intake batch of %d failed (%s); storing each alone",
                        len(batch), exc)
            for ticket in batch:
                try:
                    self._write([ticket.intake])
                except Exception as one:
                    ticket.error = one
                else:
                    ticket.stored = True
            return
        for ticket in batch:
            ticket.stored = True

    def _write(self, batch: list[Intake]) -> None:
        with self._db.write() as conn:
            write_intakes(conn, batch)
        self.batches += 1
        self.messages += len(batch)


def _own_copy(exc: Exception) -> Exception:
    """The same failure as a separate object for each request it fails: one object
    raised in several threads at once would mix their tracebacks."""
    try:
        twin = copy.copy(exc)
    except Exception:
        return exc
    twin.__cause__ = exc  # the original carries the traceback of the failed commit
    return twin


def _may_be_one_message(exc: Exception) -> bool:
    """Whether a failed batch is worth retrying message by message: not when the
    database itself is away or locked (each retry would wait as long again)."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return False
    return not isinstance(exc, OperationalError | InterfaceError)


_writers: weakref.WeakKeyDictionary[Database, IntakeWriter] = weakref.WeakKeyDictionary()
_writers_lock = threading.Lock()


def intake_writer(db: Database) -> IntakeWriter:
    """The one intake writer of this database in this process."""
    with _writers_lock:
        writer = _writers.get(db)
        if writer is None:
            writer = _writers[db] = IntakeWriter(db)
        return writer


def _unique(addresses: list[str]) -> list[str]:
    """Every envelope recipient once (case-insensitively), in the order given."""
    seen: dict[str, str] = {}
    for address in addresses:
        seen.setdefault(address.lower(), address)
    return list(seen.values())

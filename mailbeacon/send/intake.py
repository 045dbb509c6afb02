"""Intake: store an accepted message, one delivery per recipient, and `accepted` events.

All in one transaction: once the API (or the SMTP server) has answered "Queued", the
message will be tried. Every door hands over one checked `OutgoingMessage`
(outgoing.py) to `IntakeWriter.accept`, the one writer its `Runtime` owns. The rows are
made in the caller's thread; the writer then commits the messages of concurrent requests
together (group commit), each request returning once its own transaction has committed.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from mailbeacon.domains.domain import Domain
from mailbeacon.events.vocabulary import EventRecord, EventType, MessageInfo, build_event
from mailbeacon.events.writer import write_events
from mailbeacon.insight.tags import touch_tags
from mailbeacon.model.ids import new_id
from mailbeacon.send.outgoing import OutgoingMessage
from mailbeacon.storage.db import Database, conflict_insert
from mailbeacon.storage.schema import contacts, deliveries, messages

# A batch holds whole messages up to this many recipients (at least one message).
MAX_BATCH_ROWS = 2000
log = logging.getLogger("mailbeacon.intake")


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


def prepare(domain: Domain, message: OutgoingMessage) -> Intake:
    """The rows of one accepted message (made in the caller's thread, before any lock)."""
    now_us = time.time_ns() // 1000
    info = MessageInfo(domain.name, message.message_id, message.sender,
                       dict(message.headers), list(message.tags), dict(message.variables))
    row_id = new_id(now_us)
    delivery = message.delivery
    due = max(now_us, delivery.deliver_at or 0)
    delivery_rows: list[dict[str, Any]] = [
        {"id": new_id(now_us), "message_id": row_id, "recipient": rcpt, "status": "queued",
         "attempts": 0, "next_attempt_at": due, "updated_at": now_us}
        for rcpt in message.recipients
    ]
    flags = {"is-authenticated": True, "is-test-mode": delivery.testmode}
    accepted = [
        build_event(
            EventType.ACCEPTED, now_us, info, row["recipient"], row["id"],
            method=message.method, flags=flags,
            envelope={"sender": message.sender, "targets": row["recipient"],
                      "transport": "smtp"},
        )
        for row in delivery_rows
    ]
    row = {
        "id": row_id, "domain": domain.name, "message_id": message.message_id,
        "created_at": now_us, "sender": message.sender,
        "headers": json.dumps(dict(message.headers)), "tags": json.dumps(list(message.tags)),
        "user_variables": json.dumps(dict(message.variables)),
        "options": json.dumps(message.options.to_json()),
        "recipient_variables": json.dumps(delivery.recipient_variables)
        if delivery.recipient_variables is not None else None,
        "testmode": delivery.testmode, "mime": message.mime,
    }
    return Intake(row, delivery_rows, list(message.tags), accepted)


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

    def accept(self, domain: Domain, message: OutgoingMessage) -> str:
        """Queue `message`, sent from `domain`; returns its Message-ID (without <>) once
        it is committed. Blocking: call it off the event loop."""
        self.store(prepare(domain, message))
        return message.message_id

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

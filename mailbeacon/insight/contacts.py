"""Contacts (DESIGN 11, 12): listing by engagement, consent, erasure, per-recipient status.

A contact is one address a domain has sent to (`contacts` table, lowercased address).
The recorder keeps its engagement score; here the score is read, sorted and filtered,
consent is recorded, and a contact can be erased.

Erasure (`erase_contact`) forgets a person: their events (and the webhook deliveries of
those events), per-recipient state, per-link click rows, deliveries, messages that were
sent to them alone, and the contact row. Deliveries are deleted rather than rewritten to
a placeholder address: a hit or a late bounce carrying an old token then finds no
delivery and is ignored, instead of recording new rows for a placeholder (or, for a
delivery still being sent, a `delivered` event naming the person again). Kept on purpose:
suppressions (an unsubscribe or a bounce must still be honoured), soft-bounce counters,
and the anonymous stats counters.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from sqlalchemy import ColumnElement, Connection, and_, delete, exists, false, func, or_, select

from mailbeacon.errors import BadRequest, NotFound
from mailbeacon.insight import engagement
from mailbeacon.model.addresses import check_address
from mailbeacon.model.clock import now_us, rfc2822
from mailbeacon.model.ids import id_to_bytes
from mailbeacon.model.paging import Page, byte_order
from mailbeacon.storage.db import Database, conflict_insert
from mailbeacon.storage.schema import (
    contacts,
    deliveries,
    events,
    link_clicks,
    messages,
    recipient_state,
    suppressions,
    webhook_deliveries,
)

Sort = Literal["engagement", "address", "last_activity"]
SORTS: tuple[Sort, ...] = ("engagement", "address", "last_activity")
# Most engaged and most recently active first; addresses A to Z.
DEFAULT_DESCENDING: dict[Sort, bool] = {"engagement": True, "address": False,
                                        "last_activity": True}
CONSENT_VALUES: dict[str, bool | None] = {"yes": True, "no": False, "unknown": None}
Indicator = Literal["gray", "green", "blue", "red"]
CHUNK = 5000  # ids per IN (...) list: well under SQLite's and PostgreSQL's parameter caps
_NO_ACTIVITY = -1  # sorts contacts that never did anything below every real time

T = TypeVar("T")


@dataclass(frozen=True)
class Contact:
    address: str  # lowercased
    consent: bool | None  # None: not asked
    consent_at: int | None
    score: float  # at score_at
    score_at: int
    score_rank: float
    opens: int
    clicks: int
    replies: int
    last_activity_at: int | None
    created_at: int

    @classmethod
    def from_row(cls, row: Any) -> Contact:
        return cls(row.address, row.consent, row.consent_at, float(row.score),
                   int(row.score_at), float(row.score_rank), int(row.opens), int(row.clicks),
                   int(row.replies), row.last_activity_at, int(row.created_at))

    def score_now(self, now: int,
                  half_life_days: float = engagement.DEFAULT_HALF_LIFE_DAYS) -> float:
        return engagement.score_now(self.score, self.score_at, now, half_life_days)


@dataclass(frozen=True)
class ContactFilter:
    """Filters of the contact list, combined with AND; None: no filter."""

    min_score: float | None = None  # the score now, inclusive
    max_score: float | None = None
    active_since: int | None = None  # µs; last_activity_at at or after it
    consent: str | None = None  # yes | no | unknown

    def __post_init__(self) -> None:
        for name in ("min_score", "max_score"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise BadRequest(f"'{name}' must be a number of at least 0")
        if self.consent is not None and self.consent not in CONSENT_VALUES:
            raise BadRequest("'consent' must be yes, no or unknown")


@dataclass(frozen=True)
class Pivot:
    """Where a page starts: the sort key and address of a contact of the page before.

    It carries the key itself, not just the address, so a contact whose score changes
    between two requests cannot make the next page skip or repeat others.
    """

    sort: Sort
    key: float | int | str
    address: str

    @classmethod
    def of(cls, contact: Contact, sort: Sort) -> Pivot:
        key: float | int | str
        if sort == "engagement":
            key = contact.score_rank
        elif sort == "last_activity":
            key = contact.last_activity_at if contact.last_activity_at is not None \
                else _NO_ACTIVITY
        else:
            key = contact.address
        return cls(sort, key, contact.address)

    def encode(self) -> str:
        """An opaque, URL-safe token (base64url JSON; floats round-trip exactly)."""
        raw = json.dumps([self.sort, self.key, self.address], separators=(",", ":"),
                         ensure_ascii=False).encode("utf-8")
        return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")

    @classmethod
    def decode(cls, token: str, sort: Sort) -> Pivot:
        """The pivot in a token from `encode`, for a list sorted by `sort`; BadRequest else."""
        bad = BadRequest("'pivot' is not valid: use the paging URLs of a previous page")
        if len(token) > 2048:
            raise bad
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            data = json.loads(raw.decode("utf-8"))
        except (binascii.Error, ValueError, RecursionError) as exc:
            raise bad from exc
        if not (isinstance(data, list) and len(data) == 3 and isinstance(data[2], str)):
            raise bad
        found, key, address = data
        if found != sort:
            raise BadRequest(f"'pivot' belongs to a list sorted by {found!r}, not {sort!r}")
        # bool is an int: a tampered token must not pass `true` as a key.
        if isinstance(key, bool):
            raise bad
        if sort == "engagement" and isinstance(key, int | float) and math.isfinite(key):
            return cls(sort, float(key), address)
        if sort == "last_activity" and isinstance(key, int):
            return cls(sort, key, address)
        if sort == "address" and isinstance(key, str):
            return cls(sort, key, address)
        raise bad


# --- reading contacts ----------------------------------------------------------------


def address_key(value: str) -> str:
    """An address from a URL in the form contacts are stored in (for lookups)."""
    value = value.strip()
    try:
        return check_address(value, "address").lower()
    except BadRequest:
        return value.lower()  # cannot have been stored, so it will simply not be found


def score_bound(score: float, now: int,
                half_life_days: float = engagement.DEFAULT_HALF_LIFE_DAYS) -> float:
    """The rank of a contact whose score is exactly `score` at `now`.

    A score decays the same for everyone, so "score now >= s" is "rank >= this".
    """
    return engagement.rank(score, now, half_life_days)


def list_contacts(db: Database, domain: str, *, sort: Sort = "engagement",
                  descending: bool | None = None, limit: int = 100, page: Page = "first",
                  pivot: Pivot | None = None, filters: ContactFilter | None = None,
                  now: int | None = None,
                  half_life_days: float = engagement.DEFAULT_HALF_LIFE_DAYS) -> list[Contact]:
    """One page of a domain's contacts (keyset paging), in the order asked for.

    `first`/`last`: the first or last `limit` contacts; `next`/`prev`: the `limit` just
    after or just before `pivot`. Ties are broken by address, in the same direction.
    """
    if page in ("next", "prev") and pivot is None:
        raise BadRequest(f"'pivot' is required with page={page}")
    if pivot is not None and pivot.sort != sort:
        raise BadRequest(f"'pivot' belongs to a list sorted by {pivot.sort!r}")
    descending = DEFAULT_DESCENDING[sort] if descending is None else descending
    filters = filters or ContactFilter()
    now = now_us() if now is None else now
    with db.read() as conn:
        address = byte_order(conn, contacts.c.address)
        key: ColumnElement[Any]
        if sort == "engagement":
            key = contacts.c.score_rank
        elif sort == "last_activity":
            key = func.coalesce(contacts.c.last_activity_at, _NO_ACTIVITY)
        else:
            key = address
        query = select(contacts).where(contacts.c.domain == domain,
                                       *_filter_conditions(filters, now, half_life_days))
        # The pages ending at the pivot (or at the end) are read backwards, then reversed.
        backwards = page in ("prev", "last")
        scan_descending = descending != backwards
        if page in ("next", "prev"):
            assert pivot is not None
            query = query.where(_after(key, address, pivot, sort, scan_descending))
        order = [key.desc(), address.desc()] if scan_descending else [key, address]
        if sort == "address":
            order = order[:1]
        rows = conn.execute(query.order_by(*order).limit(limit)).all()
    found = [Contact.from_row(r) for r in rows]
    return found[::-1] if backwards else found


def _filter_conditions(filters: ContactFilter, now: int,
                       half_life_days: float) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    # Scores are compared through the rank, which the index on (domain, score_rank) serves.
    if filters.min_score:  # 0 (or None) keeps everyone, including scores of zero
        conditions.append(contacts.c.score_rank >= score_bound(filters.min_score, now,
                                                                half_life_days))
    if filters.max_score is not None:
        bound = score_bound(filters.max_score, now, half_life_days) if filters.max_score \
            else engagement.NO_RANK
        conditions.append(contacts.c.score_rank <= bound)
    if filters.active_since is not None:
        conditions.append(contacts.c.last_activity_at >= filters.active_since)
    if filters.consent is not None:
        consent = CONSENT_VALUES[filters.consent]
        conditions.append(contacts.c.consent.is_(None) if consent is None
                          else contacts.c.consent == consent)
    return conditions


def _after(key: ColumnElement[Any], address: ColumnElement[Any], pivot: Pivot, sort: Sort,
           descending: bool) -> ColumnElement[bool]:
    """Rows after the pivot in the scan order (key, then address as the tie-breaker)."""
    if sort == "address":
        return address < pivot.address if descending else address > pivot.address
    if descending:
        return or_(key < pivot.key, and_(key == pivot.key, address < pivot.address))
    return or_(key > pivot.key, and_(key == pivot.key, address > pivot.address))


def find_contact(conn: Connection, domain: str, address: str) -> Contact | None:
    row = conn.execute(select(contacts).where(contacts.c.domain == domain,
                                              contacts.c.address == address.lower())).first()
    return Contact.from_row(row) if row else None


def get_contact(db: Database, domain: str, address: str) -> Contact:
    with db.read() as conn:
        found = find_contact(conn, domain, address)
    if found is None:
        raise NotFound("Contact not found")
    return found


@dataclass(frozen=True)
class Suppression:
    """One suppression row that applies to a contact."""

    kind: str  # bounce | unsubscribe | complaint | allowlist
    value: str  # the address, or for an allowlist entry possibly its bare domain
    scope: str | None  # unsubscribes: "*", a tag or "list:<id>"; else None
    code: str
    error: str
    created_at: int


@dataclass(frozen=True)
class ContactDetails:
    contact: Contact
    suppressions: list[Suppression]
    counts: dict[str, int]  # messages, delivered, failed, opened, clicked, events


def contact_details(db: Database, domain: str, address: str) -> ContactDetails:
    """A contact with the suppressions that apply to it and what it was sent."""
    address = address.lower()
    with db.read() as conn:
        contact = find_contact(conn, domain, address)
        if contact is None:
            raise NotFound("Contact not found")
        bare_domain = address.rpartition("@")[2]
        rows = conn.execute(
            select(suppressions).where(
                suppressions.c.domain == domain,
                or_(suppressions.c.address == address,
                    # A whole recipient domain can be allowlisted (suppression_lists).
                    and_(suppressions.c.address == bare_domain,
                         suppressions.c.kind == "allowlist")))
            .order_by(suppressions.c.kind, suppressions.c.tag)).all()
        bounced = func.coalesce(recipient_state.c.bounced, false())
        sent = conn.execute(
            select(deliveries.c.status, bounced.label("bounced"), func.count())
            .select_from(deliveries)
            .join(messages, messages.c.id == deliveries.c.message_id)
            .outerjoin(recipient_state, recipient_state.c.delivery_id == deliveries.c.id)
            .where(messages.c.domain == domain,
                   func.lower(deliveries.c.recipient) == address)
            .group_by(deliveries.c.status, bounced)).all()
        engaged = conn.execute(  # people only: bots never change a contact's figures
            select(func.count(recipient_state.c.first_human_open_at),
                   func.count(recipient_state.c.first_human_click_at))
            .select_from(deliveries)
            .join(messages, messages.c.id == deliveries.c.message_id)
            .join(recipient_state, recipient_state.c.delivery_id == deliveries.c.id)
            .where(messages.c.domain == domain,
                   func.lower(deliveries.c.recipient) == address)).one()
        event_count = conn.execute(
            select(func.count()).select_from(events)
            .where(events.c.domain == domain, events.c.recipient == address)).scalar_one()
    by_status: dict[str, int] = {}
    for status, was_bounced, n in sent:
        # A bounce that came back after the relay took the message is a failure too.
        key = "failed" if status == "delivered" and was_bounced else status
        by_status[key] = by_status.get(key, 0) + int(n)
    found = [Suppression(r.kind, r.address, r.tag if r.kind == "unsubscribe" else None,
                         r.code, r.error, r.created_at) for r in rows]
    counts = {"messages": sum(by_status.values()), "delivered": by_status.get("delivered", 0),
              "failed": by_status.get("failed", 0), "opened": int(engaged[0]),
              "clicked": int(engaged[1]), "events": int(event_count)}
    return ContactDetails(contact, found, counts)


def suppressed_as(conn: Connection, domain: str, addresses: Sequence[str]
                  ) -> dict[str, list[str]]:
    """{address: its suppression kinds (bounce, complaint, unsubscribe), sorted} for the
    addresses that have any: one query per CHUNK addresses."""
    found: dict[str, set[str]] = {}
    for chunk in _chunks(sorted({a.lower() for a in addresses})):
        rows = conn.execute(
            select(suppressions.c.address, suppressions.c.kind)
            .where(suppressions.c.domain == domain, suppressions.c.address.in_(chunk),
                   suppressions.c.kind != "allowlist"))
        for address, kind in rows:
            found.setdefault(address, set()).add(kind)
    return {a: sorted(kinds) for a, kinds in found.items()}


# --- consent -------------------------------------------------------------------------


def parse_consent(value: str | None) -> bool | None:
    """yes -> True, no -> False, unknown -> None (not asked); BadRequest otherwise."""
    if value is None or not value.strip():
        raise BadRequest("'consent' parameter is missing: yes, no or unknown")
    lowered = value.strip().lower()
    if lowered not in CONSENT_VALUES:
        raise BadRequest(f"'consent' must be yes, no or unknown, got {value!r}")
    return CONSENT_VALUES[lowered]


def set_consent(db: Database, domain: str, address: str, consent: bool | None,
                now: int | None = None) -> Contact:
    """Record a contact's consent (creating the contact if needed); unknown clears it."""
    address = check_address(address.strip(), "address").lower()
    now = now_us() if now is None else now
    consent_at = None if consent is None else now
    with db.write() as conn:
        stmt = conflict_insert(conn, contacts).values(
            domain=domain, address=address, consent=consent, consent_at=consent_at,
            created_at=now)
        # Only the consent columns: the recorder owns the score, which may be changing.
        conn.execute(stmt.on_conflict_do_update(
            index_elements=["domain", "address"],
            set_={"consent": stmt.excluded.consent, "consent_at": stmt.excluded.consent_at}))
        found = find_contact(conn, domain, address)
    assert found is not None
    return found


# --- erasure -------------------------------------------------------------------------


@dataclass(frozen=True)
class Erasure:
    """What erasing one contact deleted (and the suppressions it kept)."""

    events: int = 0
    webhook_deliveries: int = 0
    recipient_states: int = 0
    link_clicks: int = 0
    deliveries: int = 0
    messages: int = 0
    contact: bool = False
    suppressions_kept: int = 0

    @property
    def found(self) -> bool:
        """Whether anything was known about the address."""
        return bool(self.events or self.recipient_states or self.deliveries or self.contact)


def erase_contact(db: Database, domain: str, address: str) -> Erasure:
    """Forget everything stored about `address` in `domain` except its suppressions.

    One transaction. NotFound when nothing was known, so a repeated request is a 404 and
    changes nothing. See the module docstring for what is deleted and what is kept.
    """
    address = address.strip().lower()
    by_address = func.lower(deliveries.c.recipient) == address
    with db.write() as conn:
        # Lock the deliveries first (PostgreSQL; SQLite's write lock covers everything),
        # so a worker or recorder working on one of them finishes before the rest goes.
        rows = conn.execute(
            select(deliveries.c.id, deliveries.c.message_id)
            .join(messages, messages.c.id == deliveries.c.message_id)
            .where(messages.c.domain == domain, by_address)
            .with_for_update(of=deliveries)).all()
        delivery_ids = sorted(r.id for r in rows)
        message_ids = sorted({r.message_id for r in rows})

        states = _delete_in(conn, recipient_state, recipient_state.c.delivery_id,
                            delivery_ids)
        states += conn.execute(delete(recipient_state).where(
            recipient_state.c.domain == domain,
            recipient_state.c.recipient == address)).rowcount
        clicks = _delete_in(conn, link_clicks, link_clicks.c.delivery_id, delivery_ids)

        # Events by address, and by delivery (the recorder may have written an event
        # about this delivery under another spelling of the address).
        webhooks = events_deleted = 0
        for chunk in list(_chunks(delivery_ids)) or [[]]:
            about = events.c.recipient == address
            if chunk:
                about = or_(about, events.c.delivery_id.in_(chunk))
            matching = select(events.c.id).where(events.c.domain == domain, about)
            webhooks += conn.execute(delete(webhook_deliveries).where(
                webhook_deliveries.c.domain == domain,
                webhook_deliveries.c.event_id.in_(matching))).rowcount
            events_deleted += conn.execute(delete(events).where(
                events.c.domain == domain, about)).rowcount

        deleted_deliveries = _delete_in(conn, deliveries, deliveries.c.id, delivery_ids)
        # A message sent to this address alone names it in its headers and MIME.
        deleted_messages = 0
        for chunk in _chunks(message_ids):
            deleted_messages += conn.execute(delete(messages).where(
                messages.c.id.in_(chunk),
                ~exists().where(deliveries.c.message_id == messages.c.id))).rowcount
        contact = conn.execute(delete(contacts).where(
            contacts.c.domain == domain, contacts.c.address == address)).rowcount
        kept = conn.execute(select(func.count()).select_from(suppressions).where(
            suppressions.c.domain == domain, suppressions.c.address == address)).scalar_one()
        result = Erasure(events_deleted, webhooks, states, clicks, deleted_deliveries,
                         deleted_messages, bool(contact), int(kept))
        if not result.found:
            raise NotFound("Contact not found")  # rolls back: nothing was deleted anyway
    return result


def _delete_in(conn: Connection, table: Any, column: Any, values: Sequence[str]) -> int:
    count = 0
    for chunk in _chunks(values):
        count += conn.execute(delete(table).where(column.in_(chunk))).rowcount
    return count


def _chunks(values: Sequence[T], size: int = CHUNK) -> Iterator[list[T]]:
    for start in range(0, len(values), size):
        yield list(values[start:start + size])


# --- per-recipient status ------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What came back for one delivery after the relay took it (from its events)."""

    complained: bool = False
    unsubscribed: bool = False
    bounce_code: int | None = None  # of the latest permanent failure reported later
    bounce_message: str | None = None


NO_OUTCOME = Outcome()


def delivery_outcomes(conn: Connection, domain: str, pairs: Sequence[tuple[str, str]]
                      ) -> dict[str, Outcome]:
    """{delivery id: Outcome} for these (RFC Message-ID, delivery id) pairs (a page of
    them): one query through the events' (domain, message_id) index."""
    found: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(sorted(set(pairs))):
        rows = conn.execute(
            select(events.c.delivery_id, events.c.event, events.c.severity, events.c.data)
            .where(events.c.domain == domain,
                   events.c.message_id.in_(sorted({m for m, _ in chunk})),
                   events.c.delivery_id.in_([d for _, d in chunk]),
                   events.c.event.in_(("complained", "unsubscribed", "failed")))
            .order_by(events.c.id))
        for row in rows:
            item = found.setdefault(row.delivery_id, {})
            if row.event in ("complained", "unsubscribed"):
                item[row.event] = True
            elif row.severity == "permanent":
                status = json.loads(row.data).get("delivery-status") or {}
                code = status.get("code")
                item["bounce_code"] = int(code) if isinstance(code, int) and code else None
                item["bounce_message"] = str(status.get("message") or "") or None
    return {k: Outcome(**v) for k, v in found.items()}


@dataclass(frozen=True)
class RecipientStatus:
    """One message x recipient: its delivery and what the recipient did with it."""

    delivery_id: str
    recipient: str  # as the message was addressed
    message_id: str  # RFC Message-ID, no <>
    subject: str
    tags: list[str]
    sent_at: int  # when the message was accepted, µs
    delivery_status: str  # queued | sending | delivered | failed
    attempts: int
    code: int | None
    code_message: str | None
    opens: int = 0
    clicks: int = 0
    human_opens: int = 0
    human_clicks: int = 0
    first_opened_at: int | None = None
    last_opened_at: int | None = None
    first_clicked_at: int | None = None
    last_clicked_at: int | None = None
    bounced: bool = False  # a bounce came back after the relay took the message
    next_attempt_at: int | None = None  # µs, while queued
    outcome: Outcome = NO_OUTCOME

    @property
    def shown(self) -> Status:
        return status_of(self.delivery_status, self.code, self.human_opens,
                         self.human_clicks, self.bounced, self.outcome, self.attempts,
                         self.next_attempt_at)

    @property
    def status(self) -> str:
        return self.shown.status

    @property
    def indicator(self) -> Indicator:
        return self.shown.indicator

    @classmethod
    def from_row(cls, row: Any, outcome: Outcome = NO_OUTCOME) -> RecipientStatus:
        headers = json.loads(row.headers)
        return cls(
            row.delivery_id, row.recipient, row.message_id, str(headers.get("subject", "")),
            json.loads(row.tags), int(row.created_at), row.status, int(row.attempts),
            row.last_code, row.last_message, int(row.open_count or 0),
            int(row.click_count or 0), int(row.human_open_count or 0),
            int(row.human_click_count or 0), row.first_open_at, row.last_open_at,
            row.first_click_at, row.last_click_at, bool(row.bounced),
            row.next_attempt_at, outcome)


@dataclass(frozen=True)
class Status:
    """A message x recipient's status as every page and the API show it."""

    status: str  # complained | unsubscribed | bounced | failed | clicked | opened |
    #              delivered | deferred | sending | queued
    indicator: Indicator
    code: int | None = None  # the SMTP code that explains it (bounce, failure, deferral)
    retry_at: int | None = None  # µs: when a deferred delivery is tried again


def status_of(delivery_status: str, code: int | None, human_opens: int, human_clicks: int,
              bounced: bool, outcome: Outcome = NO_OUTCOME, attempts: int = 0,
              next_attempt_at: int | None = None) -> Status:
    """The one status precedence rule (docs/dashboard.md), first match wins:

    complained, unsubscribed, bounced or failed, clicked, opened, delivered, deferred
    (with the next retry), queued (or sending). Opens and clicks are human ones only: a
    bot never changes a person's status. Red is "do not mail this address as before"
    (complained, unsubscribed, bounced, failed), blue clicked, green opened, else gray.
    A bounce reported after delivery shows the bounce's code, not the relay's 250.
    """
    if outcome.complained:
        return Status("complained", "red")
    if outcome.unsubscribed:
        return Status("unsubscribed", "red")
    if delivery_status == "failed":
        permanent = code is not None and 500 <= code < 600
        return Status("bounced" if permanent else "failed", "red", code)
    if bounced or outcome.bounce_code is not None:
        return Status("bounced", "red", outcome.bounce_code)
    if human_clicks:
        return Status("clicked", "blue")
    if human_opens:
        return Status("opened", "green")
    if delivery_status == "delivered":
        return Status("delivered", "gray")
    if delivery_status == "queued" and attempts and code is not None:
        return Status("deferred", "gray", code, next_attempt_at)
    return Status(delivery_status, "gray")  # queued | sending


def _status_query() -> Any:
    return (
        select(deliveries.c.id.label("delivery_id"), deliveries.c.recipient,
               deliveries.c.status, deliveries.c.attempts, deliveries.c.last_code,
               deliveries.c.last_message, deliveries.c.next_attempt_at,
               messages.c.message_id, messages.c.headers,
               messages.c.tags, messages.c.created_at, recipient_state.c.open_count,
               recipient_state.c.click_count, recipient_state.c.human_open_count,
               recipient_state.c.human_click_count, recipient_state.c.first_open_at,
               recipient_state.c.last_open_at, recipient_state.c.first_click_at,
               recipient_state.c.last_click_at, recipient_state.c.bounced)
        .select_from(deliveries)
        .join(messages, messages.c.id == deliveries.c.message_id)
        .outerjoin(recipient_state, recipient_state.c.delivery_id == deliveries.c.id)
    )


def _with_outcomes(conn: Connection, domain: str, rows: Sequence[Any]
                   ) -> list[RecipientStatus]:
    outcomes = delivery_outcomes(conn, domain, [(r.message_id, r.delivery_id) for r in rows])
    return [RecipientStatus.from_row(r, outcomes.get(r.delivery_id, NO_OUTCOME))
            for r in rows]


def check_delivery_id(value: str, field: str = "pivot") -> str:
    try:
        id_to_bytes(value)
    except ValueError as exc:
        raise BadRequest(f"'{field}' is not valid: use the paging URLs of a previous page"
                         ) from exc
    return value


def message_recipients(db: Database, domain: str, message_id: str, limit: int = 1000,
                       after: str | None = None) -> list[RecipientStatus]:
    """Every recipient of a message (by its Message-ID, with or without <>), in delivery
    id order (stable, for paging); `after` is the last delivery id of the page before."""
    message_id = message_id.strip().removeprefix("<").removesuffix(">").strip()
    with db.read() as conn:
        known = conn.execute(select(messages.c.id).where(
            messages.c.domain == domain, messages.c.message_id == message_id).limit(1)).first()
        if known is None:
            raise NotFound("Message not found")
        query = _status_query().where(messages.c.domain == domain,
                                      messages.c.message_id == message_id)
        if after is not None:
            query = query.where(deliveries.c.id > after)
        rows = conn.execute(query.order_by(deliveries.c.id).limit(limit)).all()
        return _with_outcomes(conn, domain, rows)


def recipient_messages(db: Database, domain: str, address: str, limit: int = 100,
                       before: str | None = None) -> list[RecipientStatus]:
    """The messages sent to `address`, newest first; `before` is the last delivery id of
    the page before (delivery ids grow with time)."""
    address = address.strip().lower()
    query = _status_query().where(messages.c.domain == domain,
                                  func.lower(deliveries.c.recipient) == address)
    if before is not None:
        query = query.where(deliveries.c.id < before)
    with db.read() as conn:
        rows = conn.execute(query.order_by(deliveries.c.id.desc()).limit(limit)).all()
        return _with_outcomes(conn, domain, rows)


# --- JSON shapes ---------------------------------------------------------------------



def contact_json(contact: Contact, now: int,
                 half_life_days: float = engagement.DEFAULT_HALF_LIFE_DAYS) -> dict[str, Any]:
    return {
        "address": contact.address,
        "score": round(contact.score_now(now, half_life_days), 3),
        "opens": contact.opens,
        "clicks": contact.clicks,
        "replies": contact.replies,
        "last_activity_at": rfc2822(contact.last_activity_at),
        "consent": contact.consent,
    }


def details_json(details: ContactDetails, now: int,
                 half_life_days: float = engagement.DEFAULT_HALF_LIFE_DAYS) -> dict[str, Any]:
    contact = details.contact
    return {
        **contact_json(contact, now, half_life_days),
        "consent_at": rfc2822(contact.consent_at),
        "created_at": rfc2822(contact.created_at),
        "suppressions": [{"kind": s.kind, "value": s.value, "scope": s.scope, "code": s.code,
                          "error": s.error, "created_at": rfc2822(s.created_at)}
                         for s in details.suppressions],
        "counts": details.counts,
    }


def status_json(item: RecipientStatus, with_message: bool = False) -> dict[str, Any]:
    found: dict[str, Any] = {
        "recipient": item.recipient,
        "status": item.status,
        "indicator": item.indicator,
        "opens": item.opens,
        "clicks": item.clicks,
        "human_opens": item.human_opens,
        "human_clicks": item.human_clicks,
        "first_opened_at": rfc2822(item.first_opened_at),
        "last_opened_at": rfc2822(item.last_opened_at),
        "first_clicked_at": rfc2822(item.first_clicked_at),
        "last_clicked_at": rfc2822(item.last_clicked_at),
        "delivery": {"status": item.delivery_status, "attempts": item.attempts,
                     "code": item.code, "message": item.code_message,
                     "next_attempt_at": rfc2822(item.shown.retry_at)},
    }
    if with_message:
        found = {"message_id": item.message_id, "subject": item.subject, "tags": item.tags,
                 "sent_at": rfc2822(item.sent_at), **found}
    return found


"""Messages: the list (one row per message x recipient, with its indicator) and a message's
page (headers, tags, recipients, event timeline, preview of the HTML as submitted)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import ColumnElement, Connection, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mailbeacon.errors import NotFound
from mailbeacon.events.query import EventQuery, Filter
from mailbeacon.insight.contacts import (
    NO_OUTCOME,
    Status,
    delivery_outcomes,
    message_recipients,
    status_of,
)
from mailbeacon.model.ids import id_to_bytes
from mailbeacon.storage.schema import contacts, deliveries, events, messages, recipient_state

from . import mime
from .timeline import load_timeline
from .web import dashboard, get_domain, int_param, render, status_label

PAGE_SIZE = 50
RECIPIENTS_PAGE = 100
TIMELINE_PAGE = 100
MAX_ADDRESSES = 200  # addresses a recipient search looks at


@dataclass(frozen=True)
class Row:
    """One message x recipient in the list."""

    delivery_id: str
    message_row: str  # messages.id, used in URLs
    recipient: str
    subject: str
    tags: list[str]
    created_at: int
    shown: Status  # insight.contacts.status_of: the one precedence rule
    opens: int  # human ones: bots never change a person's status
    clicks: int

    @property
    def status(self) -> str:
        return self.shown.status

    @property
    def indicator(self) -> str:
        return self.shown.indicator

    @property
    def label(self) -> str:
        """The indicator's text alternative."""
        return status_label(self.shown, self.opens, self.clicks)


def _valid_id(value: str | None) -> str | None:
    if not value:
        return None
    try:
        id_to_bytes(value)
    except ValueError:
        return None
    return value


def _json_fragment(text: str) -> str:
    """`text` as it appears inside a stored JSON string (non-ASCII as \\u escapes)."""
    return json.dumps(text)[1:-1]


def _like_escape(text: str) -> str:
    return text.replace("/", "//").replace("%", "/%").replace("_", "/_")


def _recipient_condition(conn: Connection, domain: str, term: str) -> ColumnElement[bool]:
    """Deliveries to addresses containing `term`, found through indexes where possible.

    deliveries.recipient has no index, so the matching addresses come from `contacts`
    (one row per address) and their deliveries from the `accepted` events (indexed by
    recipient). Events older than the retention period are gone: when that finds nothing,
    the deliveries themselves are scanned (slower, but old messages are still found).
    """
    addresses = list(conn.execute(
        select(contacts.c.address).where(
            contacts.c.domain == domain, contacts.c.address.contains(term, autoescape=True))
        .limit(MAX_ADDRESSES)).scalars())
    if addresses:
        by_events = deliveries.c.id.in_(
            select(events.c.delivery_id).where(
                events.c.domain == domain, events.c.recipient.in_(addresses),
                events.c.event == "accepted"))
        if conn.execute(select(deliveries.c.id).where(by_events).limit(1)).first():
            return by_events
    return deliveries.c.recipient.icontains(term, autoescape=True)


def list_rows(conn: Connection, domain: str, *, recipient: str = "", subject: str = "",
              tag: str = "", before: str | None = None, after: str | None = None,
              limit: int = PAGE_SIZE) -> tuple[list[Row], bool]:
    """A page of rows, newest first, and whether there are more in the paging direction.

    `before`/`after` are delivery ids (time-ordered): the page of older/newer rows.
    One query: deliveries joined with their message and recipient state.
    """
    d, m, rs = deliveries, messages, recipient_state
    query = (
        select(d.c.id, d.c.recipient, d.c.status, d.c.last_code, d.c.attempts,
               d.c.next_attempt_at, m.c.id.label("message_row"), m.c.message_id,
               m.c.created_at, m.c.headers, m.c.tags, rs.c.human_open_count,
               rs.c.human_click_count, rs.c.bounced)
        .select_from(d.join(m, m.c.id == d.c.message_id)
                     .outerjoin(rs, rs.c.delivery_id == d.c.id))
        .where(m.c.domain == domain)
    )
    if recipient:
        query = query.where(_recipient_condition(conn, domain, recipient.strip().lower()))
    if subject:
        # headers is JSON text whose keys come in a fixed order (message-id, from, to,
        # subject, list-id): text after '"subject": "' is the subject (or the list id).
        query = query.where(m.c.headers.ilike(
            f'%"subject": "%{_like_escape(_json_fragment(subject.strip()))}%', escape="/"))
    if tag:
        query = query.where(m.c.tags.contains(json.dumps(tag.strip().lower()),
                                              autoescape=True))
    ascending = after is not None and before is None
    if before is not None:
        query = query.where(d.c.id < before)
    elif after is not None:
        query = query.where(d.c.id > after)
    query = query.order_by(d.c.id.asc() if ascending else d.c.id.desc()).limit(limit + 1)
    found = list(conn.execute(query).all())
    more = len(found) > limit
    found = found[:limit]
    if ascending:
        found.reverse()
    outcomes = delivery_outcomes(conn, domain, [(r.message_id, r.id) for r in found])
    rows = []
    for r in found:
        opens, clicks = int(r.human_open_count or 0), int(r.human_click_count or 0)
        shown = status_of(r.status, r.last_code, opens, clicks, bool(r.bounced),
                          outcomes.get(r.id, NO_OUTCOME), int(r.attempts), r.next_attempt_at)
        headers = json.loads(r.headers)
        rows.append(Row(r.id, r.message_row, r.recipient, str(headers.get("subject", "")),
                        json.loads(r.tags), int(r.created_at), shown, opens, clicks))
    return rows, more


def message_list(request: Request) -> Response:
    domain = get_domain(request)
    params = request.query_params
    search = {k: params.get(k, "").strip()[:200] for k in ("recipient", "subject", "tag")}
    before = _valid_id(params.get("before"))
    after = _valid_id(params.get("after")) if before is None else None
    with dashboard(request).runtime.db.read() as conn:
        rows, more = list_rows(conn, domain.name, recipient=search["recipient"],
                               subject=search["subject"], tag=search["tag"], before=before,
                               after=after)
    filters = {k: v for k, v in search.items() if v}
    older = newer = None
    if rows:
        if more or after is not None:
            older = "?" + urlencode({**filters, "before": rows[-1].delivery_id})
        if before is not None or (after is not None and more):
            newer = "?" + urlencode({**filters, "after": rows[0].delivery_id})
    return render(request, "messages.html", domain=domain, nav="messages", rows=rows,
                  search=search, older=older, newer=newer,
                  first=("?" + urlencode(filters)) if (before or after) else None)


def _message(conn: Connection, domain: str, row_id: str) -> Any:
    if _valid_id(row_id) is None:
        raise NotFound("Message not found")
    found = conn.execute(select(messages).where(messages.c.id == row_id,
                                                messages.c.domain == domain)).first()
    if found is None:
        raise NotFound("Message not found")
    return found


def message_page(request: Request) -> Response:
    domain = get_domain(request)
    db = dashboard(request).runtime.db
    with db.read() as conn:
        row = _message(conn, domain.name, request.path_params["id"])
    parsed = mime.parse(row.mime)
    after = _valid_id(request.query_params.get("recipients_after"))
    recipients = message_recipients(db, domain.name, row.message_id,
                                    limit=RECIPIENTS_PAGE + 1, after=after)
    more_recipients = len(recipients) > RECIPIENTS_PAGE
    recipients = recipients[:RECIPIENTS_PAGE]
    only = request.query_params.get("recipient", "").strip().lower()[:320] or None
    timeline = load_timeline(db, domain.name, request, EventQuery(
        message_id=Filter.of(row.message_id), recipient=Filter.of(only) if only else None,
        ascending=True,
        limit=int_param(request, "limit", TIMELINE_PAGE, 10, 300)))
    return render(
        request, "message.html", domain=domain, nav="messages", message=row,
        info=json.loads(row.headers), tags=json.loads(row.tags),
        variables=json.loads(row.user_variables), options=json.loads(row.options),
        headers=mime.headers(row.mime), attachments=mime.attachments(parsed),
        recipients=recipients, more_recipients=more_recipients,
        timeline=timeline, only=only or "")


def message_preview(request: Request) -> Response:
    domain = get_domain(request)
    with dashboard(request).runtime.db.read() as conn:
        row = _message(conn, domain.name, request.path_params["id"])
    return mime.preview_response(row.mime, links_in_new_tab=False)


routes = [
    Route("/{domain}/messages", message_list, methods=["GET"]),
    Route("/{domain}/messages/{id}", message_page, methods=["GET"]),
    Route("/{domain}/messages/{id}/preview", message_preview, methods=["GET"]),
]

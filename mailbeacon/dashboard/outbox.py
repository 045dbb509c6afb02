"""The local outbox as an inbox: without a relay, delivered mail is kept in `local_outbox`.

Opening a message shows it exactly as delivered, tracking included: its pixel loads from
the tracking URL and its links go through /c/, so the events show up in the dashboard.
The preview may load images and open links in a new tab; it never runs scripts.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Connection, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mailbeacon.domains.domain import Domain
from mailbeacon.errors import NotFound
from mailbeacon.model.ids import id_to_bytes
from mailbeacon.storage.schema import deliveries, local_outbox, messages

from . import mime
from .web import dashboard, get_domain, render

PAGE_SIZE = 50


def _valid_id(value: str | None) -> str | None:
    if not value:
        return None
    try:
        id_to_bytes(value)
    except ValueError:
        return None
    return value


def _domains(domain: Domain) -> list[str]:
    # Rows are filed under the envelope sender's domain, which is the bounce (VERP) domain.
    return sorted({domain.name, domain.verp_domain})


def outbox_list(request: Request) -> Response:
    domain = get_domain(request)
    o = local_outbox
    before = _valid_id(request.query_params.get("before"))
    recipient = request.query_params.get("recipient", "").strip()[:320]
    query = select(o.c.id, o.c.recipient, o.c.subject, o.c.created_at, o.c.delivery_id) \
        .where(o.c.domain.in_(_domains(domain)))
    if recipient:
        query = query.where(o.c.recipient.icontains(recipient, autoescape=True))
    if before:
        query = query.where(o.c.id < before)
    with dashboard(request).runtime.db.read() as conn:
        rows = conn.execute(query.order_by(o.c.id.desc()).limit(PAGE_SIZE + 1)).all()
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    older = None
    if more:
        older = "?" + urlencode({k: v for k, v in (("recipient", recipient),
                                                   ("before", rows[-1].id)) if v})
    return render(request, "outbox.html", domain=domain, nav="outbox", rows=rows,
                  older=older, recipient=recipient, first="?" if before else None)


def _item(conn: Connection, domain: Domain, item_id: str) -> Any:
    if _valid_id(item_id) is None:
        raise NotFound("No such message in the local outbox")
    row = conn.execute(select(local_outbox).where(
        local_outbox.c.id == item_id, local_outbox.c.domain.in_(_domains(domain)))).first()
    if row is None:
        raise NotFound("No such message in the local outbox")
    return row


def outbox_message(request: Request) -> Response:
    domain = get_domain(request)
    with dashboard(request).runtime.db.read() as conn:
        row = _item(conn, domain, request.path_params["id"])
        # The message it is a copy of, to link to its events.
        source = conn.execute(
            select(messages.c.id).select_from(
                deliveries.join(messages, messages.c.id == deliveries.c.message_id))
            .where(deliveries.c.id == row.delivery_id)).scalar() if row.delivery_id else None
    return render(request, "outbox_message.html", domain=domain, nav="outbox", item=row,
                  headers=mime.headers(row.data),
                  attachments=mime.attachments(mime.parse(row.data)), source=source)


def outbox_preview(request: Request) -> Response:
    domain = get_domain(request)
    with dashboard(request).runtime.db.read() as conn:
        row = _item(conn, domain, request.path_params["id"])
    return mime.preview_response(row.data, links_in_new_tab=True)


def outbox_raw(request: Request) -> Response:
    domain = get_domain(request)
    with dashboard(request).runtime.db.read() as conn:
        row = _item(conn, domain, request.path_params["id"])
    return Response(row.data, media_type="message/rfc822", headers={
        "Content-Disposition": f'attachment; filename="{row.id}.eml"'})


routes = [
    Route("/{domain}/outbox", outbox_list, methods=["GET"]),
    Route("/{domain}/outbox/{id}.eml", outbox_raw, methods=["GET"]),
    Route("/{domain}/outbox/{id}", outbox_message, methods=["GET"]),
    Route("/{domain}/outbox/{id}/preview", outbox_preview, methods=["GET"]),
]

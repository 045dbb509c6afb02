"""Contacts: the list sorted by engagement, a contact's page (timeline, consent,
suppressions, messages) and its actions: consent, reset bounces, erase.

Listing, consent and erasure are mailbeacon.insight.contacts; suppressions are
mailbeacon.suppress.lists.
"""

from __future__ import annotations

import contextlib
from urllib.parse import urlencode

from sqlalchemy import delete, select
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mailbeacon.errors import BadRequest, NotFound
from mailbeacon.events.query import EventQuery, Filter
from mailbeacon.insight import contacts as ct
from mailbeacon.model.clock import now_us
from mailbeacon.storage.db import Database
from mailbeacon.storage.schema import soft_bounces
from mailbeacon.suppress.lists import delete_entry
from mailbeacon.suppress.rules import SuppressionKind

from .timeline import load_timeline
from .web import (
    PREFIX,
    action,
    checkbox,
    dashboard,
    get_domain,
    in_thread,
    int_param,
    redirect,
    render,
    text_field,
    url_path,
)

PAGE_SIZE = 50
SORT_LABELS = {"engagement": "Engagement", "last_activity": "Last activity",
               "address": "Address"}


def _sort(request: Request) -> ct.Sort:
    value = request.query_params.get("sort", "engagement")
    for sort in ct.SORTS:
        if value == sort:
            return sort
    return "engagement"


def contact_list(request: Request) -> Response:
    domain = get_domain(request)
    dash = dashboard(request)
    sort = _sort(request)
    page = request.query_params.get("page", "first")
    pivot = None
    token = request.query_params.get("pivot", "")
    if page in ("next", "prev") and token:
        try:
            pivot = ct.Pivot.decode(token, sort)
        except BadRequest:
            page = "first"
    elif page not in ("first", "last"):
        page = "first"
    if page in ("next", "prev") and pivot is None:
        page = "first"
    consent = request.query_params.get("consent", "")
    filters = ct.ContactFilter(consent=consent if consent in ct.CONSENT_VALUES else None)
    now = now_us()
    half_life = dash.runtime.settings.engagement_half_life_days
    found = ct.list_contacts(dash.runtime.db, domain.name, sort=sort, limit=PAGE_SIZE,
                             page=page,  # type: ignore[arg-type]
                             pivot=pivot, filters=filters, now=now, half_life_days=half_life)

    def link(which: str, contact: ct.Contact | None = None) -> str:
        query = {"sort": sort, "page": which}
        if filters.consent:
            query["consent"] = filters.consent
        if contact is not None:
            query["pivot"] = ct.Pivot.of(contact, sort).encode()
        return "?" + urlencode(query)

    paging = {"first": link("first"), "last": link("last"),
              "next": link("next", found[-1]) if found else None,
              "prev": link("prev", found[0]) if found else None}
    rows = [(c, c.score_now(now, half_life)) for c in found]
    with dash.runtime.db.read() as conn:
        suppressed = ct.suppressed_as(conn, domain.name, [c.address for c in found])
    return render(request, "contacts.html", domain=domain, nav="contacts", rows=rows,
                  suppressed=suppressed,
                  sort=sort, sorts=SORT_LABELS, consent=filters.consent or "", paging=paging)


def contact_lookup(request: Request) -> Response:
    domain = get_domain(request)
    address = ct.address_key(request.query_params.get("address", ""))
    return redirect(request, f"{PREFIX}/{domain.name}/contacts/{url_path(address)}")


def contact_page(request: Request) -> Response:
    domain = get_domain(request)
    dash = dashboard(request)
    db = dash.runtime.db
    address = ct.address_key(request.path_params["address"])
    details = ct.contact_details(db, domain.name, address)
    with db.read() as conn:
        soft = conn.execute(select(soft_bounces.c.count).where(
            soft_bounces.c.domain == domain.name,
            soft_bounces.c.address == address)).scalar()
    sent = ct.recipient_messages(db, domain.name, address, limit=20)
    timeline = load_timeline(db, domain.name, request, EventQuery(
        recipient=Filter.of(address), ascending=False,
        limit=int_param(request, "limit", 100, 10, 300)))
    now = now_us()
    return render(request, "contact.html", domain=domain, nav="contacts", details=details,
                  contact=details.contact,
                  score=details.contact.score_now(now, dash.runtime.settings
                                                  .engagement_half_life_days),
                  soft_bounces=int(soft or 0), sent=sent, timeline=timeline,
                  address_path=url_path(address))


def _back_to_contact(domain: str, address: str) -> str:
    return f"{PREFIX}/{domain}/contacts/{url_path(address)}"


@action()
async def set_consent(request: Request, form: FormData) -> Response:
    domain = await in_thread(get_domain, request)
    address = ct.address_key(request.path_params["address"])
    consent = ct.parse_consent(text_field(form, "consent"))
    await in_thread(ct.set_consent, dashboard(request).runtime.db, domain.name, address,
                    consent)
    return redirect(request, _back_to_contact(domain.name, address), "Consent saved.")


def reset_bounces(db: Database, domain: str, address: str) -> bool:
    """Delete the bounce suppression and the soft-bounce count; whether anything was."""
    removed = False
    with contextlib.suppress(NotFound):
        # Also resets the soft-bounce count when there was a suppression.
        delete_entry(db, domain, SuppressionKind.BOUNCE, address)
        removed = True
    with db.write() as conn:
        # A count below the limit has no suppression yet; it goes too.
        removed = conn.execute(delete(soft_bounces).where(
            soft_bounces.c.domain == domain,
            soft_bounces.c.address == address)).rowcount > 0 or removed
    return removed


@action()
async def reset_bounces_action(request: Request, form: FormData) -> Response:
    domain = await in_thread(get_domain, request)
    address = ct.address_key(request.path_params["address"])
    removed = await in_thread(reset_bounces, dashboard(request).runtime.db, domain.name,
                              address)
    text = "Bounces reset: the address can be sent to again." if removed \
        else "There were no bounces to reset."
    return redirect(request, _back_to_contact(domain.name, address), text)


@action()
async def erase(request: Request, form: FormData) -> Response:
    domain = await in_thread(get_domain, request)
    address = ct.address_key(request.path_params["address"])
    if not checkbox(form, "confirm"):
        raise BadRequest("Tick the box to confirm the erasure.")
    done = await in_thread(ct.erase_contact, dashboard(request).runtime.db, domain.name,
                           address)
    kept = f" {done.suppressions_kept} suppression(s) kept." if done.suppressions_kept else ""
    return redirect(request, f"{PREFIX}/{domain.name}/contacts",
                    f"Erased {address}: {done.events} events, {done.deliveries} deliveries, "
                    f"{done.messages} messages.{kept}")


routes = [
    Route("/{domain}/contacts", contact_list, methods=["GET"]),
    Route("/{domain}/contacts/find", contact_lookup, methods=["GET"]),
    Route("/{domain}/contacts/{address}", contact_page, methods=["GET"]),
    Route("/{domain}/contacts/{address}/consent", set_consent, methods=["POST"]),
    Route("/{domain}/contacts/{address}/reset-bounces", reset_bounces_action,
          methods=["POST"]),
    Route("/{domain}/contacts/{address}/erase", erase, methods=["POST"]),
]

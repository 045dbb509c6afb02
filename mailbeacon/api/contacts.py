"""Contacts API (DESIGN 11, 12): contacts by engagement, timelines, consent, erasure,
per-recipient message status, and a domain's privacy settings.

    GET    /v3/{domain}/contacts                       list: sort, filters, keyset paging
    GET    /v3/{domain}/contacts/{address}             one contact, suppressions, counts
    GET    /v3/{domain}/contacts/{address}/timeline    its events, newest first
    PUT    /v3/{domain}/contacts/{address}/consent     consent=yes|no|unknown
    DELETE /v3/{domain}/contacts/{address}             erasure (suppressions are kept)
    GET    /v3/{domain}/messages/{message_id}/recipients    status per recipient
    GET    /v3/{domain}/recipients/{address}/messages       an address's messages
    GET|PUT /v3/domains/{name}/privacy                 track_activities, truncate_ips,
                                                       retention_days
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any
from urllib.parse import quote, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mailbeacon.api.access import DOMAIN, DOMAIN_SETTINGS, path_domain, requires
from mailbeacon.api.forms import query_limit, read_form, runtime, text_field
from mailbeacon.api.paging import api_url, page_links
from mailbeacon.domains import domain as dom
from mailbeacon.errors import BadRequest
from mailbeacon.events.query import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    EventQuery,
    Filter,
    Page,
    decode_page,
    encode_page,
    fetch_page,
)
from mailbeacon.insight import contacts as ct
from mailbeacon.insight import engagement
from mailbeacon.model.clock import now_us, parse_rfc2822, rfc2822
from mailbeacon.model.paging import parse_page

MAX_RECIPIENTS_PAGE = 1000  # a message has at most 1000 recipients (submission.py)
_SCORE = re.compile(r"[0-9]{1,15}(?:\.[0-9]{1,15})?")
_EPOCH = re.compile(r"[0-9]{1,12}")
_LIMIT = re.compile(r"[0-9]{1,4}")


def half_life_days(request: Request) -> float:
    """The engagement half-life: a setting if the server has one, else the default."""
    value = getattr(runtime(request).settings, "engagement_half_life_days", None)
    return float(value) if value else engagement.DEFAULT_HALF_LIFE_DAYS


# --- contacts ------------------------------------------------------------------------


@requires(DOMAIN)
async def list_contacts(request: Request) -> JSONResponse:
    params = request.query_params
    sort = params.get("sort", "engagement")
    if sort not in ct.SORTS:
        raise BadRequest(f"'sort' must be one of {', '.join(ct.SORTS)}")
    order = params.get("order")
    if order not in (None, "asc", "desc"):
        raise BadRequest("'order' must be asc or desc")
    sort_key: ct.Sort = next(s for s in ct.SORTS if s == sort)
    descending = ct.DEFAULT_DESCENDING[sort_key] if order is None else order == "desc"
    limit = query_limit(request)
    page = parse_page(params.get("page", "first"))
    token = params.get("pivot")
    if page in ("next", "prev") and not token:
        raise BadRequest(f"'pivot' is required with page={page}: take it from a paging URL")
    pivot = ct.Pivot.decode(token, sort_key) if token and page in ("next", "prev") else None
    filters = ct.ContactFilter(
        min_score=_score(params.get("min_score"), "min_score"),
        max_score=_score(params.get("max_score"), "max_score"),
        active_since=_since(params.get("active_since")),
        consent=_consent_filter(params.get("consent")),
    )
    if (filters.min_score is not None and filters.max_score is not None
            and filters.min_score > filters.max_score):
        raise BadRequest("'min_score' is greater than 'max_score'")
    db = runtime(request).db
    domain = path_domain(request)
    now, half_life = now_us(), half_life_days(request)
    found = await run_in_threadpool(
        lambda: ct.list_contacts(db, domain.name, sort=sort_key, descending=descending,
                                 limit=limit, page=page, pivot=pivot, filters=filters,
                                 now=now, half_life_days=half_life))

    # Every filter travels in the paging URLs, so the pages belong to one list.
    kept = {k: v for k in ("sort", "order", "min_score", "max_score", "active_since",
                           "consent") if (v := params.get(k))}
    base = api_url(request, f"/v3/{domain.name}/contacts?")

    paging = page_links(
        base, "pivot", page, pivot.encode() if pivot else None,
        ct.Pivot.of(found[0], sort_key).encode() if found else None,
        ct.Pivot.of(found[-1], sort_key).encode() if found else None, limit, kept)
    return JSONResponse({
        "items": [ct.contact_json(c, now, half_life) for c in found],
        "paging": paging,
    })


@requires(DOMAIN)
async def get_contact(request: Request) -> JSONResponse:
    db = runtime(request).db
    domain = path_domain(request)
    address = ct.address_key(request.path_params["address"])
    details = await run_in_threadpool(ct.contact_details, db, domain.name, address)
    return JSONResponse(ct.details_json(details, now_us(), half_life_days(request)))


@requires(DOMAIN)
async def contact_timeline(request: Request) -> JSONResponse:
    """Every event about the address, newest first (the Events API's items and paging)."""
    db = runtime(request).db
    domain = path_domain(request)
    address = ct.address_key(request.path_params["address"])
    token = request.query_params.get("page")
    if token:
        # Whatever the token says, it pages through this address's events only.
        query = dataclasses.replace(decode_page(token), recipient=Filter.of(address))
    else:
        query = EventQuery(recipient=Filter.of(address), ascending=False,
                           limit=_int(request, "limit", DEFAULT_LIMIT, MAX_LIMIT))

    def fetch() -> Page:
        with db.read() as conn:
            return fetch_page(conn, domain.name, query)

    page = await run_in_threadpool(fetch)
    base = (api_url(request, f"/v3/{domain.name}/contacts/")
            + quote(address, safe="@") + "/timeline?page=")
    return JSONResponse({
        "items": page.items,
        "paging": {
            "first": base + encode_page(query.first()),
            "last": base + encode_page(query.last()),
            "next": base + encode_page(page.next),
            "previous": base + encode_page(page.previous),
        },
    })


@requires(DOMAIN)
async def update_consent(request: Request) -> JSONResponse:
    form = await read_form(request)
    consent = ct.parse_consent(text_field(form, "consent"))
    db = runtime(request).db
    domain = path_domain(request)
    contact = await run_in_threadpool(ct.set_consent, db, domain.name,
                                      request.path_params["address"], consent)
    return JSONResponse({"message": "Consent updated", "address": contact.address,
                         "consent": contact.consent,
                         "consent_at": rfc2822(contact.consent_at)})


@requires(DOMAIN)
async def erase_contact(request: Request) -> JSONResponse:
    db = runtime(request).db
    domain = path_domain(request)
    address = ct.address_key(request.path_params["address"])
    done = await run_in_threadpool(ct.erase_contact, db, domain.name, address)
    return JSONResponse({
        "message": "Contact erased; its suppressions are kept, so unsubscribes, bounces and "
                   "complaints are still honoured",
        "address": address,
        "events_deleted": done.events,
        "deliveries_deleted": done.deliveries,
        "messages_deleted": done.messages,
        "suppressions_kept": done.suppressions_kept,
    })


# --- per-recipient status ------------------------------------------------------------


@requires(DOMAIN)
async def message_recipients(request: Request) -> JSONResponse:
    db = runtime(request).db
    domain = path_domain(request)
    message_id = request.path_params["message_id"]
    limit = _int(request, "limit", MAX_RECIPIENTS_PAGE, MAX_RECIPIENTS_PAGE)
    after = _delivery_pivot(request)
    found = await run_in_threadpool(ct.message_recipients, db, domain.name, message_id,
                                    limit, after)
    base = (api_url(request, f"/v3/{domain.name}/messages/")
            + quote(message_id.strip().removeprefix("<").removesuffix(">"), safe="@")
            + "/recipients?")
    return JSONResponse({"items": [ct.status_json(s) for s in found],
                         "paging": _delivery_paging(base, limit, found, after)})


@requires(DOMAIN)
async def recipient_messages(request: Request) -> JSONResponse:
    db = runtime(request).db
    domain = path_domain(request)
    address = ct.address_key(request.path_params["address"])
    limit = query_limit(request)
    before = _delivery_pivot(request)
    found = await run_in_threadpool(ct.recipient_messages, db, domain.name, address, limit,
                                    before)
    base = (api_url(request, f"/v3/{domain.name}/recipients/")
            + quote(address, safe="@") + "/messages?")
    return JSONResponse({"items": [ct.status_json(s, with_message=True) for s in found],
                         "paging": _delivery_paging(base, limit, found, before)})


def _delivery_pivot(request: Request) -> str | None:
    page = request.query_params.get("page", "first")
    if page not in ("first", "next"):
        raise BadRequest("'page' must be first or next")
    pivot = request.query_params.get("pivot")
    if page == "first":
        return None
    if not pivot:
        raise BadRequest("'pivot' is required with page=next: take it from a paging URL")
    return ct.check_delivery_id(pivot)


def _delivery_paging(base: str, limit: int, found: list[ct.RecipientStatus],
                     pivot: str | None) -> dict[str, str]:
    def url(**query: Any) -> str:
        return base + urlencode({**query, "limit": limit}, quote_via=quote)

    # An empty page keeps its pivot: asking again later shows what came since.
    last = found[-1].delivery_id if found else pivot
    following = url(page="next", pivot=last) if last else url(page="first")
    return {"first": url(page="first"), "next": following}


# --- privacy -------------------------------------------------------------------------


@requires(DOMAIN_SETTINGS)
async def get_privacy(request: Request) -> JSONResponse:
    return JSONResponse({"privacy": dom.privacy_json(path_domain(request))})


@requires(DOMAIN_SETTINGS)
async def update_privacy(request: Request) -> JSONResponse:
    form = await read_form(request)
    changes = dom.parse_privacy(
        text_field(form, "track_activities"), text_field(form, "truncate_ips"),
        text_field(form, "retention_days"))
    if not changes:
        raise BadRequest("Nothing to change: give 'track_activities' (always, consent, "
                         "never), 'truncate_ips' (yes, no) or 'retention_days' (1 to 3650)")
    found = await run_in_threadpool(lambda: dom.update_domain(
        runtime(request).db, path_domain(request).name, **changes))
    return JSONResponse({"message": "Domain privacy settings have been updated",
                         "privacy": dom.privacy_json(found)})


# --- parameters ----------------------------------------------------------------------


def _int(request: Request, name: str, default: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not _LIMIT.fullmatch(raw) or not 1 <= int(raw) <= high:
        raise BadRequest(f"'{name}' must be an integer from 1 to {high}")
    return int(raw)


def _score(raw: str | None, name: str) -> float | None:
    if raw is None or not raw.strip():
        return None
    # A plain decimal: float() would also take "nan", "inf" and "1_0".
    if not _SCORE.fullmatch(raw.strip()):
        raise BadRequest(f"'{name}' must be a number of at least 0, such as 2.5")
    return float(raw)


def _since(raw: str | None) -> int | None:
    """Epoch seconds or an RFC 2822 date, in µs."""
    if raw is None or not raw.strip():
        return None
    if _EPOCH.fullmatch(raw.strip()):
        return int(raw) * 1_000_000
    return parse_rfc2822(raw, "active_since")


def _consent_filter(raw: str | None) -> str | None:
    if raw is None or not raw.strip():
        return None
    lowered = raw.strip().lower()
    if lowered not in ct.CONSENT_VALUES:
        raise BadRequest("'consent' must be yes, no or unknown")
    return lowered


# {address:path}: an address may contain '/', which arrives decoded from %2F. The routes
# with a suffix come first: {address:path} alone would take "a@b/timeline" as an address.
routes = [
    Route("/v3/{domain}/contacts", list_contacts, methods=["GET"]),
    Route("/v3/{domain}/contacts/{address:path}/timeline", contact_timeline,
          methods=["GET"]),
    Route("/v3/{domain}/contacts/{address:path}/consent", update_consent, methods=["PUT"]),
    Route("/v3/{domain}/contacts/{address:path}", get_contact, methods=["GET"]),
    Route("/v3/{domain}/contacts/{address:path}", erase_contact, methods=["DELETE"]),
    Route("/v3/{domain}/messages/{message_id:path}/recipients", message_recipients,
          methods=["GET"]),
    Route("/v3/{domain}/recipients/{address:path}/messages", recipient_messages,
          methods=["GET"]),
    Route("/v3/domains/{name}/privacy", get_privacy, methods=["GET"]),
    Route("/v3/domains/{name}/privacy", update_privacy, methods=["PUT"]),
]

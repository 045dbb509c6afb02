"""Events API: GET /v3/{domain}/events and its paging URLs (Mailgun's shape)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mailbeacon.api.access import DOMAIN, path_domain, requires
from mailbeacon.api.forms import runtime
from mailbeacon.api.paging import api_url
from mailbeacon.events.query import (
    EventQuery,
    Page,
    decode_page,
    encode_page,
    fetch_page,
    parse_query,
)


@requires(DOMAIN)
async def list_events(request: Request) -> JSONResponse:
    return await _page(request, parse_query(request.query_params.multi_items()))


@requires(DOMAIN)
async def events_page(request: Request) -> JSONResponse:
    return await _page(request, decode_page(request.path_params["page"]))


async def _page(request: Request, query: EventQuery) -> JSONResponse:
    db = runtime(request).db
    domain = path_domain(request)

    def fetch() -> Page:
        with db.read() as conn:
            return fetch_page(conn, domain.name, query)

    page = await run_in_threadpool(fetch)
    base = api_url(request, f"/v3/{domain.name}/events/")
    return JSONResponse({
        "items": page.items,
        "paging": {
            "first": base + encode_page(query.first()),
            "last": base + encode_page(query.last()),
            "next": base + encode_page(page.next),
            "previous": base + encode_page(page.previous),
        },
    })


routes = [
    Route("/v3/{domain}/events", list_events, methods=["GET"]),
    Route("/v3/{domain}/events/{page}", events_page, methods=["GET"]),
]

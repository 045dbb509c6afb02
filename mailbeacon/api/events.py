"""Events API: GET /v3/{domain}/events and its paging URLs (Mailgun's shape)."""

from __future__ import annotations

import dataclasses

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mailbeacon import domains as dom
from mailbeacon.api.forms import runtime
from mailbeacon.storage.eventlog import EventQuery, decode_page, encode_page, fetch_page


async def list_events(request: Request) -> JSONResponse:
    return await _page(request, parse_query_params(request))


async def events_page(request: Request) -> JSONResponse:
    return await _page(request, decode_page(request.path_params["page"]))


def parse_query_params(request: Request) -> EventQuery:
    from mailbeacon.storage.eventlog import parse_query

    return parse_query(dict(request.query_params))


async def _page(request: Request, query: EventQuery) -> JSONResponse:
    db = runtime(request).db
    domain = await run_in_threadpool(dom.get_domain, db, request.path_params["domain"])

    def fetch() -> object:
        with db.read() as conn:
            return fetch_page(conn, domain.name, query)

    page = await run_in_threadpool(fetch)
    base = str(request.base_url).rstrip("/") + f"/v3/{domain.name}/events/"
    first = dataclasses.replace(query, cursor=None, reverse=False)
    return JSONResponse({
        "items": page.items,  # type: ignore[attr-defined]
        "paging": {
            "first": base + encode_page(first),
            "next": base + encode_page(page.next),  # type: ignore[attr-defined]
            "previous": base + encode_page(page.previous),  # type: ignore[attr-defined]
        },
    })


routes = [
    Route("/v3/{domain}/events", list_events, methods=["GET"]),
    Route("/v3/{domain}/events/{page}", events_page, methods=["GET"]),
]

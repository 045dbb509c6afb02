"""Inbound reports API: GET /v3/{domain}/inbound (a mailbeacon extension).

What came back to the domain's bounce domain, newest first; `matched=no` lists the
reports that tied to no delivery and so changed nothing (docs/bounces.md).
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mailbeacon.api.access import DOMAIN, path_domain, requires
from mailbeacon.api.forms import query_limit, runtime
from mailbeacon.api.paging import api_url, page_links
from mailbeacon.inbound.reports import list_reports
from mailbeacon.model.paging import parse_page


@requires(DOMAIN)
async def list_inbound(request: Request) -> JSONResponse:
    params = request.query_params
    limit = query_limit(request)
    page = parse_page(params.get("page", "first"))
    matched, pivot = params.get("matched"), params.get("id")
    db = runtime(request).db
    domain = path_domain(request)
    found = await run_in_threadpool(list_reports, db, domain, matched, limit, page, pivot)
    paging = page_links(api_url(request, f"/v3/{domain.name}/inbound?"), "id", page, pivot,
                        found.items[0]["id"] if found.items else None,
                        found.items[-1]["id"] if found.items else None, limit,
                        {"matched": matched} if matched else {})
    return JSONResponse({"items": found.items, "total_count": found.total, "paging": paging})


routes = [Route("/v3/{domain}/inbound", list_inbound, methods=["GET"])]

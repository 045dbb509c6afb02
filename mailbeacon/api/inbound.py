"""Inbound reports API: GET /v3/{domain}/inbound (a mailbeacon extension).

What came back to the domain's bounce domain, newest first; `matched=no` lists the
reports that tied to no delivery and so changed nothing (docs/bounces.md).
"""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mailbeacon import domains as dom
from mailbeacon.api.access import DOMAIN, requires
from mailbeacon.api.forms import query_limit, runtime
from mailbeacon.api.paging import api_url
from mailbeacon.inbound.reports import list_reports


@requires(DOMAIN)
async def list_inbound(request: Request) -> JSONResponse:
    params = request.query_params
    limit = query_limit(request)
    matched, before = params.get("matched"), params.get("before")
    db = runtime(request).db
    domain = await run_in_threadpool(dom.get_domain, db, request.path_params["domain"])
    page = await run_in_threadpool(list_reports, db, domain, matched, limit, before)
    base = api_url(request, f"/v3/{domain.name}/inbound?")
    query = {"limit": str(limit), **({"matched": matched} if matched else {})}
    paging = {"first": base + urlencode(query)}
    if len(page.items) == limit:
        paging["next"] = base + urlencode({**query, "before": page.items[-1]["id"]})
    return JSONResponse({"items": page.items, "total_count": page.total, "paging": paging})


routes = [Route("/v3/{domain}/inbound", list_inbound, methods=["GET"])]

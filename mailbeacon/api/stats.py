"""Stats API (Mailgun's shapes) and campaign reports (our extension); see mailbeacon.insight.stats.

    GET /v3/{domain}/stats/total                          ?event=&start=&end=&resolution=
    GET /v3/{domain}/tags/{tag}/stats                      &duration=&human=yes
    GET /v3/{domain}/tags/{tag}/stats/aggregates/{countries|providers|devices}
                                                          ?start=&end=&human=yes
    GET /v3/{domain}/stats/aggregates/failures            ?start=&end=
    GET /v3/{domain}/tags/{tag}/stats/aggregates/failures ?start=&end=
    GET /v3/{domain}/campaigns                            ?limit=&page=&tag=&prefix=
                                                          &start=&end=&human=yes
    GET /v3/{domain}/campaigns/{tag}(.csv)                ?start=&end=&human=yes

`human=yes` (our extension) counts only hits judged human (DESIGN 10).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mailbeacon.api.access import DOMAIN, path_domain, requires
from mailbeacon.api.forms import query_limit, runtime
from mailbeacon.api.paging import api_url, page_links
from mailbeacon.api.tags import path_tag, tag_json
from mailbeacon.errors import BadRequest
from mailbeacon.insight import stats
from mailbeacon.insight import tags as tg
from mailbeacon.model.paging import parse_page

T = TypeVar("T")


async def _query(request: Request, run: Callable[[Connection, str], T]) -> T:
    """`run(conn, domain)` on a read connection, in a worker thread."""
    db, domain = runtime(request).db, path_domain(request)

    def read() -> T:
        with db.read() as conn:
            return run(conn, domain.name)

    return await run_in_threadpool(read)


def _human(request: Request) -> bool:
    return stats.parse_flag(request.query_params.get("human"), "human")


@requires(DOMAIN)
async def domain_stats(request: Request) -> JSONResponse:
    return await _stats(request, "")


@requires(DOMAIN)
async def tag_stats(request: Request) -> JSONResponse:
    return await _stats(request, path_tag(request.path_params["tag"]))


async def _stats(request: Request, tag: str) -> JSONResponse:
    params = request.query_params
    events = stats.parse_events(params.getlist("event"))
    period = stats.parse_period(params)
    human = _human(request)
    body = await _query(request, lambda conn, domain: stats.total_stats(
        conn, domain, tag, events, period, human=human))
    return JSONResponse(body)


def _aggregate(kind: str) -> Callable[[Request], Any]:
    @requires(DOMAIN)
    async def endpoint(request: Request) -> JSONResponse:
        tag = path_tag(request.path_params["tag"])
        start, end = stats.parse_bounds(request.query_params)
        # dimension_stats holds whole days: widen the bounds to them.
        lower = None if start is None else stats.floor_bucket(start, "day")
        upper = None if end is None else stats.floor_bucket(end, "day") + stats.DAY
        human = _human(request)
        body = await _query(request, lambda conn, domain: stats.aggregates(
            conn, domain, tag, kind, lower, upper, human=human))
        return JSONResponse(body)

    endpoint.__name__ = endpoint.__qualname__ = f"aggregate_{kind}"
    return endpoint


@requires(DOMAIN)
async def failures(request: Request) -> JSONResponse:
    """Failures by category (our extension, like Infobip's error groups) over whole hours
    from `start` to `end` (epoch seconds or RFC 2822; default all time)."""
    tag = path_tag(request.path_params["tag"]) if "tag" in request.path_params else ""
    start, end = stats.parse_bounds(request.query_params)
    lower = None if start is None else stats.floor_bucket(start, "hour")
    upper = None if end is None else stats.floor_bucket(end, "hour") + stats.HOUR
    found = await _query(request, lambda conn, domain: stats.failure_breakdown(
        conn, domain, tag, lower, upper))
    return JSONResponse({"tag": tag, "failures": found})


@requires(DOMAIN)
async def campaign(request: Request) -> JSONResponse:
    report = await _report(request)
    return JSONResponse(report.to_json())


@requires(DOMAIN)
async def campaign_csv(request: Request) -> Response:
    report = await _report(request)
    name = re.sub(r"[^A-Za-z0-9._-]", "_", report.tag)
    return Response(report.to_csv(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="campaign-{name}.csv"'})


async def _report(request: Request) -> stats.CampaignReport:
    tag = path_tag(request.path_params["tag"])
    start, end = stats.parse_bounds(request.query_params)
    human = _human(request)
    return await _query(request, lambda conn, domain: stats.campaign_report(
        conn, domain, tag, start, end, human=human))


@requires(DOMAIN)
async def list_campaigns(request: Request) -> JSONResponse:
    """Tags (keyset paging as the Tags API) with their sent/delivered/opened/clicked."""
    params = request.query_params
    limit = query_limit(request)
    page = parse_page(params.get("page", "first"))
    pivot = params.get("tag")
    if page in ("next", "prev") and pivot is None:
        raise BadRequest(f"'tag' is required with page={page}: the tag to page from")
    prefix = params.get("prefix", "")
    start, end = stats.parse_bounds(params)
    human = _human(request)
    db = runtime(request).db
    domain = path_domain(request)
    found = await run_in_threadpool(tg.list_tags, db, domain.name, limit, page, pivot or "",
                                    prefix)

    def totals() -> dict[str, dict[str, int]]:
        with db.read() as conn:
            return stats.campaign_totals(conn, domain.name, [t.tag for t in found], start,
                                         end, human=human)

    counts = await run_in_threadpool(totals) if found else {}
    kept = {k: v for k, v in params.items() if k in ("prefix", "start", "end", "human")}
    base = api_url(request, f"/v3/{domain.name}/campaigns?")

    paging = page_links(base, "tag", page, pivot, found[0].tag if found else None,
                        found[-1].tag if found else None, limit, kept)
    return JSONResponse({
        "items": [{**tag_json(t), **counts[t.tag]} for t in found],
        "paging": paging,
    })


# These go before the Tags API's /v3/{domain}/tags/{tag} routes.
# The .csv route comes first, or {tag} would take "promo.csv" as the tag.
routes = [
    Route("/v3/{domain}/stats/total", domain_stats, methods=["GET"]),
    Route("/v3/{domain}/tags/{tag}/stats", tag_stats, methods=["GET"]),
    Route("/v3/{domain}/stats/aggregates/failures", failures, methods=["GET"]),
    Route("/v3/{domain}/tags/{tag}/stats/aggregates/failures", failures, methods=["GET"]),
    *[Route(f"/v3/{{domain}}/tags/{{tag}}/stats/aggregates/{kind}", _aggregate(kind),
            methods=["GET"]) for kind in stats.AGGREGATES],
    Route("/v3/{domain}/campaigns", list_campaigns, methods=["GET"]),
    Route("/v3/{domain}/campaigns/{tag}.csv", campaign_csv, methods=["GET"]),
    Route("/v3/{domain}/campaigns/{tag}", campaign, methods=["GET"]),
]

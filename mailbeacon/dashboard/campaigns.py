"""Campaigns (tags): the list with their main figures, and one campaign's report (rates,
top links, failures by reason, devices, OS, clients, countries, over time) with a CSV
download.

The figures come from mailbeacon.insight.stats, which reads the rollups only.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mailbeacon.events.failures import FailureCategory, failure_rows
from mailbeacon.insight import stats
from mailbeacon.insight.tags import list_tags

from .charts import line_chart, svg_response
from .web import dashboard, get_domain, human_param, render

PAGE_SIZE = 50
PERIODS = {"all": None, "30d": 30, "7d": 7}
TOP_VALUES = 20  # rows per breakdown table


def campaign_list(request: Request) -> Response:
    domain = get_domain(request)
    db = dashboard(request).runtime.db
    human = human_param(request)
    prefix = request.query_params.get("prefix", "").strip().lower()[:128]
    page = request.query_params.get("page", "first")
    pivot = request.query_params.get("pivot", "")[:128]
    if page not in ("first", "next", "prev", "last") or (page in ("next", "prev")
                                                           and not pivot):
        page = "first"
    found = list_tags(db, domain.name, PAGE_SIZE, page, pivot, prefix)  # type: ignore[arg-type]
    with db.read() as conn:
        totals = stats.campaign_totals(conn, domain.name, [t.tag for t in found],
                                       human=human)
    rows = []
    for tag in found:
        t = totals.get(tag.tag, {})
        delivered = t.get("delivered", 0)
        rows.append({"tag": tag, **t,
                     "open_rate": stats.rate(t.get("opened", 0), delivered),
                     "click_rate": stats.rate(t.get("clicked", 0), delivered)})

    def link(which: str, at: str = "") -> str:
        query: dict[str, str] = {"page": which}
        if at:
            query["pivot"] = at
        if prefix:
            query["prefix"] = prefix
        if not human:
            query["hits"] = "all"
        return "?" + urlencode(query)

    paging = {"first": link("first"), "last": link("last"),
              "next": link("next", found[-1].tag) if found else None,
              "prev": link("prev", found[0].tag) if found else None}
    return render(request, "campaigns.html", domain=domain, nav="campaigns", rows=rows,
                  human=human, tag_prefix=prefix, paging=paging)


def _report(request: Request) -> tuple[Any, stats.CampaignReport, str]:
    domain = get_domain(request)
    period = request.query_params.get("period", "all")
    days = PERIODS.get(period)
    start = int(time.time()) - (days - 1) * 86400 if days else None
    with dashboard(request).runtime.db.read() as conn:
        report = stats.campaign_report(conn, domain.name, request.path_params["tag"].lower(),
                                       start, None, human=human_param(request))
    return domain, report, period if period in PERIODS else "all"


def campaign_page(request: Request) -> Response:
    domain, report, period = _report(request)
    human = human_param(request)
    query = {k: v for k, v in (("period", period if period != "all" else ""),
                               ("hits", "" if human else "all")) if v}
    breakdowns = {
        key: sorted(values.items(), key=lambda item: (
            -item[1].get("unique_opened", 0), -item[1].get("unique_clicked", 0), item[0]
        ))[:TOP_VALUES]
        for key, values in report.breakdowns.items()}
    failures = failure_rows({FailureCategory(c): (n["permanent"], n["temporary"])
                             for c, n in report.failures.items()})
    return render(request, "campaign.html", domain=domain, nav="campaigns", report=report,
                  breakdowns=breakdowns, failures=failures,
                  human=human, period=period, periods=list(PERIODS),
                  query=("?" + urlencode(query)) if query else "",
                  tag_path=quote(report.tag, safe=""))


def campaign_csv(request: Request) -> Response:
    domain, report, _ = _report(request)
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in report.tag)
    return Response(report.to_csv(), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="{domain.name}-{name}.csv"'})


def campaign_chart(request: Request) -> Response:
    _, report, _ = _report(request)
    days = report.over_time
    labels = [datetime.fromtimestamp(d["time"], UTC).strftime("%b %d") for d in days]
    series = {"Delivered": [d["delivered"] for d in days],
              "Opened": [d["opened"] for d in days],
              "Clicked": [d["clicked"] for d in days]}
    return svg_response(line_chart(labels, series, label_every=max(1, len(days) // 10)))


routes = [
    Route("/{domain}/campaigns", campaign_list, methods=["GET"]),
    Route("/{domain}/campaigns/{tag}.csv", campaign_csv, methods=["GET"]),
    Route("/{domain}/campaigns/{tag}/chart.svg", campaign_chart, methods=["GET"]),
    Route("/{domain}/campaigns/{tag}", campaign_page, methods=["GET"]),
]

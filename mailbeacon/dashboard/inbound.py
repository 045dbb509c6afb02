"""Returned mail: the reports that came back to the domain's bounce domain, unmatched ones
first (they tied to no delivery, so they changed nothing: forged, or about mail that was
not ours)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mailbeacon.inbound.reports import MATCHED, list_reports
from mailbeacon.model.ids import ID_LENGTH

from .web import dashboard, get_domain, render

PAGE_SIZE = 50
SHOWN = {"no": "Unmatched", "yes": "Matched", "": "All"}


def inbound_page(request: Request) -> Response:
    domain = get_domain(request)
    matched = request.query_params.get("matched", "no")
    if matched not in (*MATCHED, ""):
        matched = "no"
    older = request.query_params.get("older") or None
    page = list_reports(dashboard(request).runtime.db, domain, matched or None, PAGE_SIZE,
                        "next" if older and len(older) == ID_LENGTH else "first", older)
    more = page.items[-1]["id"] if len(page.items) == PAGE_SIZE else None
    return render(request, "inbound.html", domain=domain, nav="suppressions",
                  reports=page.items, total=page.total, matched=matched, shown=SHOWN,
                  more=more)


routes = [Route("/{domain}/inbound", inbound_page, methods=["GET"])]

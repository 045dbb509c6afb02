"""Event timelines (a message's, a contact's): a page of events, flattened for a table.

Pages come from the Events API's query code (events/query.py), so the dashboard pages
exactly as the API does; its opaque page tokens travel in `?page=`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from starlette.requests import Request

from mailbeacon.errors import BadRequest
from mailbeacon.events.query import EventQuery, Page, decode_page, encode_page, fetch_page
from mailbeacon.storage.db import Database


def event_row(item: dict[str, Any]) -> dict[str, Any]:
    """What a timeline row shows of one event (Mailgun's JSON shape)."""
    client = item.get("client-info") or {}
    geo = item.get("geolocation") or {}
    status = item.get("delivery-status") or {}
    place = ", ".join(str(v) for v in (geo.get("city"), geo.get("region"), geo.get("country"))
                      if v and v != "Unknown")
    device = " / ".join(str(v) for v in (client.get("device-type"), client.get("client-os"))
                        if v and v != "unknown")
    bot = str(client.get("bot") or "")
    reasons = [str(r) for r in item.get("bot-reasons") or []]
    detail = ""
    if status:
        text = str(status.get("message") or status.get("description") or "")
        words = text.split()
        # A relay's or a bounce's text often starts with the codes already: say them once.
        codes = [str(v) for v in (status.get("code"), status.get("enhanced-code"))
                 if v not in (None, "", 0) and str(v) not in words[:2]]
        detail = " ".join([*codes, text]).strip()
    if item.get("reason") and item.get("event") == "failed":
        detail = f"{item.get('severity', '')} {item['reason']}: {detail}".strip(" :")
    if item.get("event") == "unsubscribed" and item.get("unsubscribe-scope"):
        detail = "scope: " + ", ".join(map(str, item["unsubscribe-scope"]))
    return {
        "id": item.get("id", ""),
        "ts": float(item.get("timestamp", 0)) * 1_000_000,
        "event": str(item.get("event", "")),
        # A temporary failure is a deferral (tried again later), not a red failure.
        "badge": "deferred" if item.get("event") == "failed"
        and item.get("severity") == "temporary" else str(item.get("event", "")),
        "recipient": str(item.get("recipient", "")),
        "subject": str(((item.get("message") or {}).get("headers") or {}).get("subject", "")),
        "message_id": str(((item.get("message") or {}).get("headers") or {})
                          .get("message-id", "")),
        "ip": str(item.get("ip", "")),
        "place": place,
        "device": device,
        "client": str(client.get("client-name") or "") if client.get("client-name") != "unknown"
        else "",
        "user_agent": str(client.get("user-agent", "")),
        "bot": bot,
        "bot_reasons": reasons,
        "human": not bot or set(reasons) <= {"gmail-proxy", "yahoo-proxy"},
        "url": str(item.get("url", "")),
        "detail": detail,
        "implied": bool((item.get("flags") or {}).get("is-implied-by-click")),
    }


@dataclasses.dataclass(frozen=True)
class Timeline:
    rows: list[dict[str, Any]]
    next: str  # page token of the next page
    previous: str
    first: str


def load_timeline(db: Database, domain: str, request: Request, base: EventQuery) -> Timeline:
    """The page named by `?page=` (restricted to `base`'s filters), else the first page."""
    token = request.query_params.get("page", "")
    query = base
    if token:
        try:
            found = decode_page(token)
        except BadRequest:
            found = base
        # Whatever the token says, it pages through `base`'s events only.
        query = dataclasses.replace(found, event=base.event, recipient=base.recipient,
                                    message_id=base.message_id, tag=base.tag,
                                    limit=base.limit, ascending=base.ascending)
    with db.read() as conn:
        page: Page = fetch_page(conn, domain, query)
    return Timeline([event_row(i) for i in page.items], encode_page(page.next),
                    encode_page(page.previous), encode_page(query.first()))

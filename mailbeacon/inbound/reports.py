"""The inbound reports kept for inspection, per domain: what came back, what it tied to.

A report belongs to the domains whose bounce domain it was addressed to (`host`); a bounce
domain shared by several sending domains shows its reports to each of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from mailbeacon.domains.domain import Domain
from mailbeacon.errors import BadRequest
from mailbeacon.model.ids import ID_LENGTH
from mailbeacon.model.paging import Page
from mailbeacon.storage.db import Database
from mailbeacon.storage.schema import inbound_messages

# ?matched= -> the statuses it lists ("processed": tied to a delivery).
MATCHED = {"yes": ("processed",), "no": ("unmatched",)}


@dataclass(frozen=True)
class ReportPage:
    items: list[dict[str, Any]]
    total: int  # all reports of the filter, not only this page


def list_reports(db: Database, domain: Domain, matched: str | None, limit: int,
                 page: Page = "first", pivot: str | None = None) -> ReportPage:
    """One page, newest first, with keyset paging as the other lists (tags.list_tags):
    `first`/`last` are the newest or oldest `limit` reports, `next`/`prev` the `limit`
    just older or newer than the report `pivot`."""
    if matched is not None and matched not in MATCHED:
        raise BadRequest("'matched' must be yes or no")
    if page in ("next", "prev") and (pivot is None or len(pivot) != ID_LENGTH):
        raise BadRequest(f"'id' must be the id of a listed report with page={page}")
    where = _of(domain, matched)
    columns = [c for c in inbound_messages.c if c.name != "raw"]
    with db.read() as conn:
        total = conn.execute(select(func.count()).select_from(inbound_messages)
                             .where(*where)).scalar_one()
        if page == "next":
            where.append(inbound_messages.c.id < pivot)
        elif page == "prev":
            where.append(inbound_messages.c.id > pivot)
        # The pages ending at the pivot (or at the oldest) are read backwards, then reversed.
        backwards = page in ("prev", "last")
        order = inbound_messages.c.id if backwards else inbound_messages.c.id.desc()
        rows = conn.execute(select(*columns).where(*where).order_by(order).limit(limit)).all()
    found = [report_json(r) for r in rows]
    return ReportPage(found[::-1] if backwards else found, int(total))


def _of(domain: Domain, matched: str | None) -> list[Any]:
    """The conditions for the domain's reports, all or only the (un)matched ones."""
    where: list[Any] = [inbound_messages.c.host == domain.verp_domain.lower()]
    if matched is not None:
        where.append(inbound_messages.c.status.in_(MATCHED[matched]))
    return where


def report_json(row: Any) -> dict[str, Any]:
    detail = row.detail or {}
    return {
        "id": row.id,
        "received-at": row.received_at / 1_000_000,
        "source": row.source,
        "status": row.status,
        "kind": row.kind,
        "mail-from": row.mail_from,
        "recipients": row.recipients or [],
        "size": row.size,
        "results": detail.get("results", []),
    }

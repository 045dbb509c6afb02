"""Writing what a recipient did: contact scores and per-message recipient state.

Shared by the hit writer (opens, clicks) and by inbound mail (replies, bounces).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from mailbeacon.insight import engagement
from mailbeacon.storage.bulk import upsert_rows
from mailbeacon.storage.db import conflict_insert
from mailbeacon.storage.schema import contacts, recipient_state


@dataclass
class ContactScore:
    """A contact's engagement as the hit writer reads and updates it."""

    consent: bool | None = None
    score: float = 0.0
    score_at: int = 0
    opens: int = 0
    clicks: int = 0
    last_activity_at: int | None = None
    changed: bool = False


def upsert_contacts(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert contacts or overwrite the given columns of existing ones."""
    now = max((r.get("last_activity_at") or 0) for r in rows)
    columns = [c for c in rows[0] if c != "created_at"]
    upsert_rows(conn, contacts, [*columns, "created_at"],
                [(*(r[c] for c in columns), r.get("created_at", now)) for r in rows],
                keys=("domain", "address"),
                replace=[c for c in columns if c not in ("domain", "address")])


def engage(conn: Connection, domain: str, address: str, action: str, nth: int, ts: int,
           half_life_days: float = engagement.DEFAULT_HALF_LIFE_DAYS) -> None:
    """Add one action to a contact's score outside the hit path (replies)."""
    row = conn.execute(select(contacts).where(contacts.c.domain == domain,
                                              contacts.c.address == address)).first()
    person = ContactScore(row.consent, row.score, row.score_at, row.opens, row.clicks,
                      row.last_activity_at) if row else ContactScore()
    score, score_at = engagement.add(person.score, person.score_at,
                                     engagement.weight(action, nth), ts, half_life_days)
    replies = (row.replies if row else 0) + (1 if action == "reply" else 0)
    upsert_contacts(conn, [{"domain": domain, "address": address, "score": score,
                            "score_at": score_at,
                            "score_rank": engagement.rank(score, score_at, half_life_days),
                            "replies": replies,
                            "last_activity_at": max(person.last_activity_at or 0, ts)}])


def mark_bounced(conn: Connection, delivery_id: str, domain: str, address: str) -> None:
    """The red indicator: this message bounced for this recipient."""
    row = blank_state_row(delivery_id, domain)
    row.update(recipient=address.lower(), bounced=True)
    stmt = conflict_insert(conn, recipient_state).values(**row)
    conn.execute(stmt.on_conflict_do_update(index_elements=["delivery_id"],
                                            set_={"bounced": True}))


def blank_state_row(delivery_id: str, domain: str) -> dict[str, Any]:
    return {"delivery_id": delivery_id, "domain": domain, "recipient": None,
            "open_count": 0, "click_count": 0, "human_open_count": 0,
            "human_click_count": 0, "first_open_at": None, "last_open_at": None,
            "first_click_at": None, "last_click_at": None, "first_human_open_at": None,
            "first_human_click_at": None}

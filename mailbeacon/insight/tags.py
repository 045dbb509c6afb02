"""Tags a domain has sent with: when each was first and last seen, and its description.

Intake calls `touch_tags` in its own transaction; the rest serves the Tags API. Tags are
stored lowercased (they are case-insensitive) and listed in byte order on both backends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, select, update

from mailbeacon.errors import NotFound
from mailbeacon.model.paging import Page, byte_order
from mailbeacon.storage.db import Database, upsert_add
from mailbeacon.storage.schema import dimension_stats, link_stats, stats_buckets, tags


@dataclass(frozen=True)
class Tag:
    tag: str
    description: str
    first_seen: int  # µs since the epoch
    last_seen: int

    @classmethod
    def from_row(cls, row: Any) -> Tag:
        return cls(row.tag, row.description, row.first_seen, row.last_seen)


def touch_tags(conn: Connection, domain: str, tag_names: Sequence[str], ts: int) -> None:
    """Record that a message with these tags was accepted at `ts` (µs), in the caller's
    transaction: new tags are added, known ones keep first_seen and their description."""
    # Lowercased and deduplicated again because PostgreSQL refuses an upsert that
    # touches the same row twice in one statement.
    unique = dict.fromkeys(t.lower() for t in tag_names)
    upsert_add(
        conn, tags,
        [{"domain": domain, "tag": t, "description": "", "first_seen": ts, "last_seen": ts}
         for t in unique],
        keys=("domain", "tag"), latest=("last_seen",), earliest=("first_seen",),
    )


def find_tag(conn: Connection, domain: str, tag: str) -> Tag | None:
    row = conn.execute(select(tags).where(tags.c.domain == domain,
                                          tags.c.tag == tag.lower())).first()
    return Tag.from_row(row) if row else None


def get_tag(db: Database, domain: str, tag: str) -> Tag:
    with db.read() as conn:
        found = find_tag(conn, domain, tag)
    if found is None:
        raise NotFound("tag not found")
    return found


def list_tags(db: Database, domain: str, limit: int = 100, page: Page = "first",
              pivot: str = "", prefix: str = "") -> list[Tag]:
    """One page of a domain's tags in ascending order (keyset paging).

    `first`/`last`: the first or last `limit` tags; `next`/`prev`: the `limit` tags just
    after or just before `pivot` (a tag name, usually the last or first of a page).
    """
    with db.read() as conn:
        name = byte_order(conn, tags.c.tag)
        query = select(tags).where(tags.c.domain == domain)
        if prefix:
            # autoescape: % and _ are ordinary characters in a tag.
            query = query.where(tags.c.tag.startswith(prefix.lower(), autoescape=True))
        if page == "next":
            query = query.where(name > pivot.lower())
        elif page == "prev":
            query = query.where(name < pivot.lower())
        # The pages ending at the pivot (or at the end) are read backwards, then reversed.
        backwards = page in ("prev", "last")
        query = query.order_by(name.desc() if backwards else name).limit(limit)
        rows = conn.execute(query).all()
    found = [Tag.from_row(r) for r in rows]
    return found[::-1] if backwards else found


def update_tag(db: Database, domain: str, tag: str, description: str) -> None:
    with db.write() as conn:
        done = conn.execute(update(tags).where(tags.c.domain == domain,
                                               tags.c.tag == tag.lower())
                            .values(description=description))
        if done.rowcount == 0:
            raise NotFound("tag not found")


def delete_tag(db: Database, domain: str, tag: str) -> None:
    """Forget a tag and its stats counters; events keep the tag in their data."""
    tag = tag.lower()
    with db.write() as conn:
        done = conn.execute(delete(tags).where(tags.c.domain == domain, tags.c.tag == tag))
        if done.rowcount == 0:
            raise NotFound("tag not found")  # rolls back: nothing else is deleted either
        for table in (stats_buckets, dimension_stats, link_stats):  # all its counters
            conn.execute(delete(table).where(table.c.domain == domain, table.c.tag == tag))

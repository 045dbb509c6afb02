"""The retention purge (DESIGN 12); the privacy settings are on the Domain record.

`purge` deletes raw data older than each domain's `retention_days`: events, finished
webhook deliveries, and stored inbound messages. Stats counters (stats_buckets,
dimension_stats, link_stats) are never purged: they hold counts, not people.
Suppressions are kept forever. Not purged either: messages, deliveries, recipient_state
and contacts (job history, per-recipient status and scores; contact erasure removes a
person's). Deletes run in batches of `batch_size` rows, each in its own short
transaction, so a large purge never holds the write lock for long.

Call `purge(db)` periodically (hourly is plenty) from any one process or from cron; runs
in several processes at once are harmless, only wasteful.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, delete, select

from mailbeacon.model.clock import now_us
from mailbeacon.model.ids import id_from_parts
from mailbeacon.storage.db import Database
from mailbeacon.storage.schema import domains, events, inbound_messages, webhook_deliveries

DAY_US = 86_400 * 1_000_000
BATCH_SIZE = 5000
DEFAULT_RETENTION_DAYS = 30  # the column's default; inbound messages when no domain exists
FINISHED_WEBHOOKS = ("done", "rejected")  # failed ones stay: they can be replayed


# --- the purge -----------------------------------------------------------------------


def purge(db: Database, now_us: int | None = None, *,
          batch_size: int = BATCH_SIZE) -> dict[str, int]:
    """Delete raw data past each domain's retention; rows deleted per table.

    Events and finished webhook deliveries go by their domain's `retention_days`.
    Inbound messages belong to no domain (a bounce may match several, or none), so
    they are kept as long as the longest retention of any domain.
    """
    now = _now() if now_us is None else now_us
    with db.read() as conn:
        retention = {r.name: int(r.retention_days) for r in conn.execute(
            select(domains.c.name, domains.c.retention_days).order_by(domains.c.name))}
    counts = {"events": 0, "webhook_deliveries": 0, "inbound_messages": 0}
    for name, days in retention.items():
        horizon = max(0, now - days * DAY_US)
        # Ids start with their creation time (ids.py), and an event's id is allocated at
        # commit, after the event happened. Bounding the id turns "is anything old left?"
        # into a short range scan of the (domain, id) index rather than a scan of every
        # event of the domain, every hour. An event committed long after it happened is
        # deleted once its commit, too, is past the horizon.
        before = id_from_parts(horizon, bytes(8))
        counts["events"] += _purge(db, events.c.id, batch_size, events.c.domain == name,
                                   events.c.id < before, events.c.ts < horizon)
        counts["webhook_deliveries"] += _purge(
            db, webhook_deliveries.c.id, batch_size, webhook_deliveries.c.domain == name,
            webhook_deliveries.c.id < before, webhook_deliveries.c.created_at < horizon,
            webhook_deliveries.c.status.in_(FINISHED_WEBHOOKS))
    longest = max(retention.values(), default=DEFAULT_RETENTION_DAYS)
    counts["inbound_messages"] = _purge(db, inbound_messages.c.id, batch_size,
                                        inbound_messages.c.received_at
                                        < now - longest * DAY_US)  # indexed
    return counts


def _purge(db: Database, key: Any, batch_size: int, *where: ColumnElement[bool]) -> int:
    """Delete the rows matching `where`, at most `batch_size` per transaction."""
    table = key.table
    total = 0
    while True:
        # Oldest ids first: they are the likeliest to match.
        batch = select(key).where(*where).order_by(key).limit(batch_size)
        with db.write() as conn:
            # The ids are read first, so the count returned is exactly what was deleted.
            ids = list(conn.execute(batch).scalars())
            if ids:
                conn.execute(delete(table).where(key.in_(ids)))
        total += len(ids)
        if len(ids) < batch_size:
            return total


def _now() -> int:
    return now_us()

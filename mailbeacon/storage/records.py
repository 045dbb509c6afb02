"""The one funnel every event goes through on its way into the database.

Storing an event also bumps its hourly stats counters in the same transaction, so stats
never drift from events (DESIGN 2, 3).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from sqlalchemy import Connection

from mailbeacon.events import EventRecord
from mailbeacon.storage.db import insert_events, upsert_add
from mailbeacon.storage.schema import stats_buckets
from mailbeacon.webhooks.store import outbox_rows

HOUR_US = 3600 * 1_000_000


def write_events(conn: Connection, records: Sequence[EventRecord]) -> list[str]:
    """Store events, their stats and their webhook deliveries in the caller's
    transaction; returns the new ids.

    Call it last in the transaction: id allocation holds a lock until commit.
    """
    counts: Counter[tuple[str, str, str, int]] = Counter()
    for record in records:
        hour = record.ts // HOUR_US * 3600
        for counter in record.stats_counters():
            for tag in ("", *record.message.tags):
                counts[(record.message.domain, tag, counter, hour)] += 1
    upsert_add(
        conn, stats_buckets,
        [{"domain": d, "tag": t, "event": e, "hour": h, "count": n}
         for (d, t, e, h), n in sorted(counts.items())],
        keys=("domain", "tag", "event", "hour"), add=("count",),
    )
    ids = insert_events(conn, [r.row() for r in records])
    outbox_rows(conn, records, ids)  # webhooks: in the same transaction as their events
    return ids

"""The one funnel every event goes through on its way into the database.

Storing an event also bumps its hourly stats counters in the same transaction, so stats
never drift from events (DESIGN 2, 3).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from sqlalchemy import Connection

from mailbeacon.events.failures import NEW_FAILURE_COUNTERS
from mailbeacon.events.fanout import outbox_rows
from mailbeacon.events.vocabulary import EventRecord
from mailbeacon.storage.db import insert_events, upsert_add
from mailbeacon.storage.schema import dimension_stats, stats_buckets

HOUR_US = 3600 * 1_000_000
DAY_US = 24 * HOUR_US


def write_events(conn: Connection, records: Sequence[EventRecord]) -> list[str]:
    """Store events, their stats and their webhook deliveries in the caller's
    transaction; returns the new ids.

    Call it last in the transaction: id allocation holds a lock until commit.
    """
    counts: Counter[tuple[str, str, str, int]] = Counter()
    humans: Counter[tuple[str, str, str, int]] = Counter()
    dims: Counter[tuple[str, str, str, str, str, int]] = Counter()
    dim_humans: Counter[tuple[str, str, str, str, str, int]] = Counter()
    for record in records:
        hour = record.ts // HOUR_US * 3600
        day = record.ts // DAY_US * 86400
        domain = record.message.domain
        dimensions = {"provider": record.recipient.rpartition("@")[2].lower() or "unknown",
                      **record.dimensions}
        for counter, added, human in record.stats_counters():
            for tag in ("", *record.message.tags):
                counts[(domain, tag, counter, hour)] += added
                humans[(domain, tag, counter, hour)] += human
                if counter in NEW_FAILURE_COUNTERS:
                    continue  # read by hour only: no breakdown by dimension
                for dimension, value in dimensions.items():
                    key = (domain, tag, counter, dimension, value[:128] or "unknown", day)
                    dims[key] += added
                    dim_humans[key] += human
    upsert_add(
        conn, stats_buckets,
        [{"domain": d, "tag": t, "event": e, "hour": h, "count": n,
          "human_count": humans[(d, t, e, h)]}
         for (d, t, e, h), n in sorted(counts.items())],
        keys=("domain", "tag", "event", "hour"), add=("count", "human_count"),
    )
    upsert_add(
        conn, dimension_stats,
        [{"domain": d, "tag": t, "event": e, "dimension": dim, "value": v, "day": day,
          "count": n, "human_count": dim_humans[(d, t, e, dim, v, day)]}
         for (d, t, e, dim, v, day), n in sorted(dims.items())],
        keys=("domain", "tag", "event", "dimension", "value", "day"),
        add=("count", "human_count"),
    )
    ids = insert_events(conn, [r.row() for r in records])
    outbox_rows(conn, records, ids)  # webhooks: in the same transaction as their events
    return ids

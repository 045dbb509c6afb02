"""The one funnel every event goes through on its way into the database.

Storing an event also bumps its hourly stats counters in the same transaction, so stats
never drift from events (DESIGN 2, 3).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection

from mailbeacon.events.failures import NEW_FAILURE_COUNTERS
from mailbeacon.events.fanout import outbox_rows
from mailbeacon.events.vocabulary import EventRecord
from mailbeacon.storage.bulk import upsert_rows
from mailbeacon.storage.db import insert_events
from mailbeacon.storage.schema import dimension_stats, stats_buckets

HOUR_US = 3600 * 1_000_000
DAY_US = 24 * HOUR_US


def write_events(conn: Connection, records: Sequence[EventRecord]) -> list[str]:
    """Store events, their stats and their webhook deliveries in the caller's
    transaction; returns the new ids.

    Call it last in the transaction: id allocation holds a lock until commit.
    """
    # Counted first per message's tag set and whole dimension set, then spread over
    # each tag and dimension: a few dict updates per event however many tags it has.
    by_hour: dict[tuple[str, tuple[str, ...], str, int], list[int]] = {}
    by_day: dict[tuple[str, tuple[str, ...], str, tuple[tuple[str, str], ...], int],
                 list[int]] = {}
    for record in records:
        message = record.message
        domain, tags = message.domain, tuple(message.tags)
        dimensions: tuple[tuple[str, str], ...] | None = None
        for counter, added, human in record.stats_counters():
            key = (domain, tags, counter, record.ts // HOUR_US * 3600)
            found = by_hour.get(key)
            if found is None:
                by_hour[key] = [added, human]
            else:
                found[0] += added
                found[1] += human
            if counter in NEW_FAILURE_COUNTERS:
                continue  # read by hour only: no breakdown by dimension
            if dimensions is None:
                dimensions = tuple({
                    "provider": record.recipient.rpartition("@")[2].lower() or "unknown",
                    **record.dimensions}.items())
            day_key = (domain, tags, counter, dimensions, record.ts // DAY_US * 86400)
            found = by_day.get(day_key)
            if found is None:
                by_day[day_key] = [added, human]
            else:
                found[0] += added
                found[1] += human
    counts: dict[tuple[str, str, str, int], list[int]] = {}
    for (domain, tags, counter, hour), (added, human) in by_hour.items():
        for tag in ("", *tags):
            _add(counts, (domain, tag, counter, hour), added, human)
    dims: dict[tuple[str, str, str, str, str, int], list[int]] = {}
    for (domain, tags, counter, dimensions, day), (added, human) in by_day.items():
        for tag in ("", *tags):
            for dimension, value in dimensions:
                _add(dims, (domain, tag, counter, dimension, value[:128] or "unknown", day),
                     added, human)
    # In key order: two writers on PostgreSQL then lock rows in the same order.
    upsert_rows(conn, stats_buckets,
                ("domain", "tag", "event", "hour", "count", "human_count"),
                [(*key, n, human) for key, (n, human) in sorted(counts.items())],
                keys=("domain", "tag", "event", "hour"), add=("count", "human_count"))
    upsert_rows(conn, dimension_stats,
                ("domain", "tag", "event", "dimension", "value", "day", "count",
                 "human_count"),
                [(*key, n, human) for key, (n, human) in sorted(dims.items())],
                keys=("domain", "tag", "event", "dimension", "value", "day"),
                add=("count", "human_count"))
    ids = insert_events(conn, [r.row() for r in records])
    outbox_rows(conn, records, ids)  # webhooks: in the same transaction as their events
    return ids


def _add(counts: dict[Any, list[int]], key: Any, added: int, human: int) -> None:
    found = counts.get(key)
    if found is None:
        counts[key] = [added, human]
    else:
        found[0] += added
        found[1] += human

"""The retention purge, on both backends (the privacy settings: tests/domains)."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, select

from mailbeacon.domains import domain as dom
from mailbeacon.insight import retention
from mailbeacon.model.ids import id_from_parts, new_id
from mailbeacon.storage.db import Database
from mailbeacon.storage.schema import (
    events,
    inbound_messages,
    stats_buckets,
    webhook_deliveries,
)

DAY = retention.DAY_US
NOW = 1_800_000_000 * 1_000_000  # µs, a fixed "now" for every purge below


def add_domain(db: Database, name: str, days: int) -> None:
    dom.add_domain(db, name)
    dom.update_domain(db, name, retention_days=days)


def add_events(db: Database, domain: str, age_days: float, count: int,
               committed_days: float | None = None) -> list[str]:
    """Events `age_days` old, committed then (or `committed_days` ago): ids start with
    their commit time, as db.insert_events makes them."""
    ts = NOW - int(age_days * DAY)
    commit = NOW - int((age_days if committed_days is None else committed_days) * DAY)
    ids = [id_from_parts(commit + i, os.urandom(8)) for i in range(count)]
    rows = [{"id": id_, "domain": domain, "ts": ts, "event": "opened",
             "recipient": "a@x.org", "message_id": "m@x", "delivery_id": None,
             "severity": None, "tags": "", "data": "{}"} for id_ in ids]
    with db.write() as conn:
        conn.execute(events.insert(), rows)
    return ids


def event_ids(db: Database) -> set[str]:
    with db.read() as conn:
        return set(conn.execute(select(events.c.id)).scalars())


class CountingWrites:
    """Wraps db.write to count the transactions a purge opens."""

    def __init__(self, db: Database) -> None:
        self.count = 0
        self._write = db.write

    @contextlib.contextmanager
    def __call__(self) -> Iterator[Connection]:
        self.count += 1
        with self._write() as conn:
            yield conn


def test_old_events_go_in_batches_per_domain(db: Database,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    add_domain(db, "long.example", 30)
    add_domain(db, "short.example", 7)
    add_events(db, "long.example", 40, 7)
    kept = add_events(db, "long.example", 20, 3)
    add_events(db, "short.example", 10, 4)
    kept += add_events(db, "short.example", 2, 2)
    kept += add_events(db, "long.example", 30, 1)  # exactly at the horizon: kept
    buckets = [{"domain": d, "tag": "", "event": "opened", "hour": h * 3600, "count": 9,
                "human_count": 4} for d in ("long.example", "short.example") for h in (1, 2)]
    with db.write() as conn:
        conn.execute(stats_buckets.insert(), buckets)

    writes = CountingWrites(db)
    monkeypatch.setattr(db, "write", writes)
    counts = retention.purge(db, NOW, batch_size=3)
    assert counts == {"events": 11, "webhook_deliveries": 0, "inbound_messages": 0}
    assert event_ids(db) == set(kept)
    # long: 3 + 3 + 1 events; short: 3 + 1; then one look each at webhooks and inbound.
    assert writes.count == 3 + 2 + 2 + 1
    with db.read() as conn:
        left = [dict(r._mapping) for r in conn.execute(
            select(stats_buckets).order_by(stats_buckets.c.domain, stats_buckets.c.hour))]
    assert left == buckets  # stats are never purged

    # Nothing more to do: a second run deletes nothing.
    assert retention.purge(db, NOW, batch_size=3)["events"] == 0
    assert event_ids(db) == set(kept)


def test_a_longer_retention_keeps_more(db: Database) -> None:
    add_domain(db, "example.com", 30)
    add_events(db, "example.com", 60, 2)
    assert retention.purge(db, NOW)["events"] == 2
    assert event_ids(db) == set()
    old = add_events(db, "example.com", 60, 2)
    dom.update_domain(db, "example.com", retention_days=90)
    assert retention.purge(db, NOW) == {"events": 0, "webhook_deliveries": 0,
                                        "inbound_messages": 0}
    assert event_ids(db) == set(old)


def test_an_event_committed_late_goes_once_its_commit_is_old_too(db: Database) -> None:
    add_domain(db, "example.com", 30)
    (late,) = add_events(db, "example.com", 40, 1, committed_days=25)
    assert retention.purge(db, NOW)["events"] == 0
    assert event_ids(db) == {late}
    assert retention.purge(db, NOW + 6 * DAY)["events"] == 1


def test_finished_webhook_deliveries_go_others_stay(db: Database) -> None:
    add_domain(db, "example.com", 10)
    add_domain(db, "other.example", 100)

    def row(domain: str, status: str, age_days: int) -> dict[str, Any]:
        created_at = NOW - age_days * DAY
        return {"id": new_id(created_at), "domain": domain, "webhook": "opened", "url": "https://h/",
                "event_id": new_id(), "payload": {}, "status": status,
                "next_attempt_at": NOW, "created_at": created_at}

    rows = [row("example.com", s, 20) for s in ("done", "rejected", "pending", "failed")]
    rows += [row("example.com", "done", 5), row("other.example", "done", 20)]
    with db.write() as conn:
        conn.execute(webhook_deliveries.insert(), rows)
    assert retention.purge(db, NOW)["webhook_deliveries"] == 2
    with db.read() as conn:
        left = set(conn.execute(select(webhook_deliveries.c.id)).scalars())
    assert left == {r["id"] for r in rows[2:]}


def test_inbound_messages_follow_the_longest_retention(db: Database) -> None:
    def add(age_days: int) -> str:
        raw = f"bounce {age_days} {new_id()}".encode()
        id_ = new_id()
        with db.write() as conn:
            conn.execute(inbound_messages.insert().values(
                id=id_, received_at=NOW - age_days * DAY, source="smtp",
                sha256=hashlib.sha256(raw).hexdigest(), size=len(raw), raw=raw,
                status="processed"))
        return id_

    def left() -> set[str]:
        with db.read() as conn:
            return set(conn.execute(select(inbound_messages.c.id)).scalars())

    ages = {age: add(age) for age in (5, 20, 45, 400)}
    # No domain yet: the default retention (30 days).
    assert retention.purge(db, NOW)["inbound_messages"] == 2
    assert left() == {ages[5], ages[20]}
    add_domain(db, "short.example", 7)
    add_domain(db, "long.example", 14)
    assert retention.purge(db, NOW)["inbound_messages"] == 1
    assert left() == {ages[5]}


def test_purge_of_an_empty_database_uses_the_clock(db: Database) -> None:
    assert retention.purge(db) == {"events": 0, "webhook_deliveries": 0,
                                   "inbound_messages": 0}

"""Privacy settings of a domain, and the retention purge (DESIGN 12).

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

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, delete, select

from mailbeacon.domains.domain import parse_bool
from mailbeacon.errors import BadRequest, NotFound
from mailbeacon.model.ids import id_from_parts
from mailbeacon.storage.db import Database, now_us
from mailbeacon.storage.schema import domains, events, inbound_messages, webhook_deliveries

DAY_US = 86_400 * 1_000_000
BATCH_SIZE = 5000
TRACK_ACTIVITIES = ("always", "consent", "never")
MIN_RETENTION_DAYS = 1
MAX_RETENTION_DAYS = 3650
DEFAULT_RETENTION_DAYS = 30  # the column's default; inbound messages when no domain exists
FINISHED_WEBHOOKS = ("done", "rejected")  # failed ones stay: they can be replayed


# --- privacy settings ----------------------------------------------------------------


@dataclass(frozen=True)
class Privacy:
    track_activities: str  # always | consent | never
    truncate_ips: bool
    retention_days: int

    def to_json(self) -> dict[str, Any]:
        return {"track_activities": self.track_activities, "truncate_ips": self.truncate_ips,
                "retention_days": self.retention_days}


def get_privacy(db: Database, name: str) -> Privacy:
    with db.read() as conn:
        row = conn.execute(select(domains.c.track_activities, domains.c.truncate_ips,
                                  domains.c.retention_days)
                           .where(domains.c.name == name.strip().lower())).first()
    if row is None:
        raise NotFound(f"Domain not found: {name}")
    return Privacy(row.track_activities, bool(row.truncate_ips), int(row.retention_days))


def parse_privacy(track_activities: str | None = None, truncate_ips: str | None = None,
                  retention_days: str | None = None) -> dict[str, Any]:
    """Column changes from form values (None: unchanged); BadRequest naming a bad one."""
    changes: dict[str, Any] = {}
    if track_activities is not None:
        value = track_activities.strip().lower()
        if value not in TRACK_ACTIVITIES:
            raise BadRequest(f"'track_activities' must be one of {', '.join(TRACK_ACTIVITIES)}, "
                             f"got {track_activities!r}")
        changes["track_activities"] = value
    if truncate_ips is not None:
        changes["truncate_ips"] = parse_bool(truncate_ips, "truncate_ips")
    if retention_days is not None:
        raw = retention_days.strip()
        # The length check keeps int() away from absurdly long digit strings.
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 5
                and MIN_RETENTION_DAYS <= int(raw) <= MAX_RETENTION_DAYS):
            raise BadRequest(f"'retention_days' must be an integer from {MIN_RETENTION_DAYS} "
                             f"to {MAX_RETENTION_DAYS}, got {retention_days!r}")
        changes["retention_days"] = int(raw)
    return changes


def update_privacy(db: Database, name: str, *, track_activities: str | None = None,
                   truncate_ips: bool | None = None,
                   retention_days: int | None = None) -> Privacy:
    """Change a domain's privacy settings (None: unchanged); the settings afterwards."""
    changes: dict[str, Any] = {}
    if track_activities is not None:
        if track_activities not in TRACK_ACTIVITIES:
            raise BadRequest(f"'track_activities' must be one of {', '.join(TRACK_ACTIVITIES)}")
        changes["track_activities"] = track_activities
    if truncate_ips is not None:
        changes["truncate_ips"] = truncate_ips
    if retention_days is not None:
        if not MIN_RETENTION_DAYS <= retention_days <= MAX_RETENTION_DAYS:
            raise BadRequest(f"'retention_days' must be an integer from {MIN_RETENTION_DAYS} "
                             f"to {MAX_RETENTION_DAYS}")
        changes["retention_days"] = retention_days
    name = name.strip().lower()
    if changes:
        with db.write() as conn:
            done = conn.execute(domains.update().where(domains.c.name == name)
                                .values(**changes)).rowcount
        if not done:
            raise NotFound(f"Domain not found: {name}")
    return get_privacy(db, name)


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

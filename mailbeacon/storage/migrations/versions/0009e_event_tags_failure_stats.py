"""event tags index; Mailgun's failure stats keys and failures by category

Revision ID: 0009e
Revises: 0008

Backfills from the events still stored (raw events are kept `retention_days`):
- `event_tags`: one row per tag of every event.
- `stats_buckets`: the counters added in this release for failed events (see
  `mailbeacon.events.failures`): delayed bounces, suppressions by kind, ESP
  blocks, and failures by category. Buckets whose events were already purged keep their
  totals, with these finer counters at 0.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0009e"
down_revision = "0009c"
branch_labels = None
depends_on = None

_ID = sa.String(length=26).with_variant(sa.String(length=26, collation="C"), "postgresql")
_BATCH = 5000


def upgrade() -> None:
    op.create_table(
        "event_tags",
        sa.Column("domain", sa.String(length=253), nullable=False),
        sa.Column("tag", sa.String(length=128), nullable=False),
        sa.Column("event_id", _ID, nullable=False),
        sa.ForeignKeyConstraint(["event_id"], ["events.id"],
                                name=op.f("fk_event_tags_event_id_events"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("domain", "tag", "event_id", name=op.f("pk_event_tags")),
    )
    op.create_index("ix_event_tags_event_id", "event_tags", ["event_id"])
    conn = op.get_bind()
    _backfill_tags(conn)
    _backfill_failure_stats(conn)


def downgrade() -> None:
    from mailbeacon.events.failures import NEW_FAILURE_COUNTERS  # noqa: PLC0415

    op.drop_index("ix_event_tags_event_id", table_name="event_tags")
    op.drop_table("event_tags")
    buckets = sa.table("stats_buckets", sa.column("event"))
    op.get_bind().execute(buckets.delete().where(
        buckets.c.event.in_(sorted(NEW_FAILURE_COUNTERS))))


_EVENTS = sa.table("events", sa.column("id"), sa.column("domain"), sa.column("ts"),
                   sa.column("event"), sa.column("severity"), sa.column("tags"),
                   sa.column("data"))


def _batches(conn: sa.Connection, *where: Any) -> Any:
    """Events rows in id order, `_BATCH` at a time (keyset: constant memory)."""
    events = _EVENTS
    last = ""
    while True:
        rows = conn.execute(sa.select(events).where(events.c.id > last, *where)
                            .order_by(events.c.id).limit(_BATCH)).all()
        if not rows:
            return
        yield rows
        last = rows[-1].id


def _backfill_tags(conn: sa.Connection) -> None:
    from mailbeacon.storage.db import event_tag_names  # noqa: PLC0415

    events = _EVENTS
    tags = sa.table("event_tags", sa.column("event_id"), sa.column("tag"),
                    sa.column("domain"))
    for rows in _batches(conn, events.c.tags != ""):
        found = [{"event_id": r.id, "tag": tag, "domain": r.domain}
                 for r in rows for tag in event_tag_names(r.tags)]
        if found:
            conn.execute(tags.insert(), found)


def _backfill_failure_stats(conn: sa.Connection) -> None:
    from mailbeacon.events.failures import failure_counters  # noqa: PLC0415
    from mailbeacon.storage.db import event_tag_names, upsert_add  # noqa: PLC0415
    from mailbeacon.storage.schema import stats_buckets  # noqa: PLC0415

    events = _EVENTS
    counts: Counter[tuple[str, str, str, int]] = Counter()
    for rows in _batches(conn, events.c.event == "failed"):
        for row in rows:
            if row.severity not in ("temporary", "permanent"):
                continue
            data = json.loads(row.data)
            new = failure_counters(row.severity == "permanent", data, new_only=True)
            hour = row.ts // 3_600_000_000 * 3600
            for counter in new:
                for tag in ("", *event_tag_names(row.tags)):
                    counts[(row.domain, tag, counter, hour)] += 1
    rows = [{"domain": d, "tag": t, "event": e, "hour": h, "count": n, "human_count": n}
            for (d, t, e, h), n in sorted(counts.items())]
    for start in range(0, len(rows), _BATCH):
        upsert_add(conn, stats_buckets, rows[start:start + _BATCH],
                   keys=("domain", "tag", "event", "hour"), add=("count", "human_count"))

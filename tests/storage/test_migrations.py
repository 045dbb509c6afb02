"""The migrations build exactly the schema the code declares, on both backends."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from mailbeacon.events.query import EventQuery, Filter, fetch_page
from mailbeacon.model.ids import new_id
from mailbeacon.storage.db import Database
from mailbeacon.storage.migrate import alembic_config
from mailbeacon.storage.schema import event_tags, metadata, stats_buckets


@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based")
def test_migrations_match_the_schema(db: Database) -> None:
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    # Expression indexes are not compared by autogenerate; everything else must match.
    meaningful = [d for d in diff if not (isinstance(d, tuple) and d[0] in (
        "add_index", "remove_index") and d[1].name == "ix_deliveries_recipient_lower")]
    assert meaningful == []


def _upgrade(db: Database, revision: str) -> None:
    with db.engine.connect() as conn:
        cfg = alembic_config(db)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        conn.commit()


def test_0009e_backfills_event_tags_and_failure_counters(database_url: str) -> None:
    db = Database(database_url)
    try:
        _upgrade(db, "0008")
        hour = 1_700_000_000 // 3600 * 3600
        old = sa.table("events", *(sa.column(c) for c in (
            "id", "domain", "ts", "event", "recipient", "message_id", "delivery_id",
            "severity", "tags", "data")))

        def row(event: str, tags: str, severity: str | None = None,
                **data: Any) -> dict[str, Any]:
            return {"id": new_id(), "domain": "example.com", "ts": hour * 1_000_000 + 5,
                    "event": event, "recipient": "a@example.org", "message_id": "m@x",
                    "delivery_id": None, "severity": severity, "tags": tags,
                    "data": json.dumps({"event": event, **data})}

        rows = [
            row("delivered", "|a|b|"),
            row("failed", "|a|", "permanent", reason="bounce",
                **{"delivery-status": {"code": 550, "message": "5.1.1 No such user"}}),
            row("failed", "", "permanent", reason="suppress-unsubscribe"),
            row("failed", "|b|", "permanent", reason="userunknown",
                flags={"is-delayed-bounce": True}),
            row("failed", "", "temporary", reason="generic",
                **{"delivery-status": {"code": 421, "message": "4.7.0 Rate limited"}}),
        ]
        with db.write() as conn:
            conn.execute(old.insert(), rows)
        _upgrade(db, "head")
        with db.read() as conn:
            tagged = {(r.event_id, r.tag) for r in conn.execute(sa.select(event_tags))}
            counters = {(r.tag, r.event): r.count for r in conn.execute(
                sa.select(stats_buckets).where(stats_buckets.c.hour == hour))}
        ids = [r["id"] for r in rows]
        assert tagged == {(ids[0], "a"), (ids[0], "b"), (ids[1], "a"), (ids[3], "b")}
        assert counters == {
            ("", "perm:no-such-user"): 2, ("a", "perm:no-such-user"): 1,
            ("b", "perm:no-such-user"): 1, ("", "delayed_bounce"): 1,
            ("b", "delayed_bounce"): 1, ("", "suppress_unsubscribe"): 1,
            ("", "temp:policy-block"): 1, ("", "espblock"): 1,
        }
        # The tag filter finds the old events through the backfilled index.
        with db.read() as conn:
            page = fetch_page(conn, "example.com", EventQuery(tag=Filter.of("b")))
        assert [item["event"] for item in page.items] == ["failed", "delivered"]
    finally:
        db.dispose()

"""The migrations build exactly the schema the code declares, on both backends."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from mailbeacon.storage.db import Database
from mailbeacon.storage.schema import metadata


@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based")
def test_migrations_match_the_schema(db: Database) -> None:
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    # Expression indexes are not compared by autogenerate; everything else must match.
    meaningful = [d for d in diff if not (isinstance(d, tuple) and d[0] in (
        "add_index", "remove_index") and d[1].name == "ix_deliveries_recipient_lower")]
    assert meaningful == []

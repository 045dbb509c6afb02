"""Shared fixtures: one database fixture parametrized over SQLite and PostgreSQL."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from mailbeacon.storage.db import Database
from mailbeacon.storage.migrate import migrate

POSTGRES_URL = os.environ.get(
    "MAILBEACON_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REQUIRE_POSTGRES = bool(os.environ.get("CI") or os.environ.get("MAILBEACON_REQUIRE_POSTGRES"))


def _postgres_schema_url() -> Iterator[str]:
    """A URL whose connections live in a fresh schema, dropped afterwards."""
    admin = sa.create_engine(POSTGRES_URL)
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL at {POSTGRES_URL} is required in CI but unreachable: {exc}")
        pytest.skip(f"PostgreSQL at {POSTGRES_URL} unreachable (set CI=1 to fail instead)")
    schema = "t_" + secrets.token_hex(6)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database URL of each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'mailbeacon.db'}"
    else:
        yield from _postgres_schema_url()


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """A migrated database of each backend."""
    database = Database(database_url)
    migrate(database)
    yield database
    database.dispose()

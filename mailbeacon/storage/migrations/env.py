"""Alembic environment: runs on the connection mailbeacon hands over."""

from __future__ import annotations

from alembic import context

from mailbeacon.storage.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only `alembic` run by hand
    raise RuntimeError("run migrations with `mailbeacon migrate`")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()

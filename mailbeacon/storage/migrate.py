"""Apply Alembic migrations; run at start-up and by `mailbeacon migrate`."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from mailbeacon.storage.db import Database

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(db: Database) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    return cfg


def migrate(db: Database) -> None:
    """Bring the schema to the newest revision; safe when several processes start at once."""
    with db.engine.connect() as conn:
        db.migration_lock(conn)  # released by the commit, or the rollback on an error
        cfg = alembic_config(db)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        conn.commit()

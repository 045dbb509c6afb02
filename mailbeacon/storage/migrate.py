"""Apply Alembic migrations; run at start-up and by `mailbeacon migrate`.

Alembic is imported when a migration runs: the further HTTP processes of serve never
migrate, and importing it costs each of them about 9 MB.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mailbeacon.storage.db import Database

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(db: Database) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    return cfg


def migrate(db: Database) -> None:
    """Bring the schema to the newest revision; safe when several processes start at once."""
    from alembic import command

    with db.engine.connect() as conn:
        db.migration_lock(conn)  # released by the commit, or the rollback on an error
        cfg = alembic_config(db)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        conn.commit()

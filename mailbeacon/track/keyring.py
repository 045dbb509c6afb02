"""The keys that sign tracking tokens.

The configured secret signs; former secrets still verify. With none configured, one is
generated once and stored in the database, so links stay valid across restarts and
every process of a PostgreSQL installation signs with the same key.
"""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from mailbeacon.model.tokens import TokenCodec
from mailbeacon.storage.db import Database
from mailbeacon.storage.schema import installation

_SECRET_ROW = "token_secret"


def stored_secret(db: Database) -> str:
    """The generated secret, created on first use; the first process to insert wins."""
    with db.read() as conn:
        value = conn.execute(
            select(installation.c.value).where(installation.c.name == _SECRET_ROW)).scalar()
    if value:
        return str(value)
    try:
        with db.write() as conn:
            conn.execute(installation.insert().values(
                name=_SECRET_ROW, value=secrets.token_urlsafe(32)))
    except IntegrityError:
        pass  # another process was first; read its value
    with db.read() as conn:
        return str(conn.execute(
            select(installation.c.value).where(installation.c.name == _SECRET_ROW)).scalar_one())


def token_codec(db: Database, secret_key: str = "", old_secret_keys: str = "") -> TokenCodec:
    """The codec for the configured secret (MAILBEACON_SECRET_KEY) and the former ones
    (MAILBEACON_OLD_SECRET_KEYS, comma-separated)."""
    current = secret_key or stored_secret(db)
    former = [k.strip() for k in old_secret_keys.split(",") if k.strip()]
    if secret_key:
        # The generated key stays valid for links sent before a key was configured.
        former.append(stored_secret(db))
    return TokenCodec([k.encode("utf-8") for k in (current, *former)])

"""API keys: made by `mailbeacon keys create`, checked on every API call.

Only a SHA-256 of each key is stored, so a copy of the database gives no usable key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from sqlalchemy import select

from mailbeacon.ids import new_id
from mailbeacon.storage.db import Database, now_us
from mailbeacon.storage.schema import api_keys


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_key(db: Database, description: str = "") -> str:
    """A new key, returned once; only its hash is kept."""
    key = "key-" + secrets.token_hex(16)
    with db.write() as conn:
        conn.execute(api_keys.insert().values(
            id=new_id(), key_hash=_digest(key), description=description, created_at=now_us()))
    return key


class KeyChecker:
    """Answers whether a presented key is valid; the configured key is compared in
    constant time, stored keys are looked up by their hash."""

    # Valid keys are remembered this long, sparing a query per API call; a key deleted
    # from the database stops working within this time.
    CACHE_SECONDS = 30.0

    def __init__(self, db: Database, configured_key: str = "") -> None:
        self._db = db
        self._configured = configured_key.encode("utf-8") if configured_key else b""
        self._valid: dict[str, float] = {}  # key hash -> until (monotonic)

    def is_valid(self, key: str) -> bool:
        if not key:
            return False
        if self._configured and hmac.compare_digest(key.encode("utf-8"), self._configured):
            return True
        digest = _digest(key)
        if self._valid.get(digest, 0.0) > time.monotonic():
            return True
        with self._db.read() as conn:
            found = conn.execute(
                select(api_keys.c.id).where(api_keys.c.key_hash == digest)
            ).first()
        if found is not None:
            if len(self._valid) > 10_000:
                self._valid.clear()
            self._valid[digest] = time.monotonic() + self.CACHE_SECONDS
        return found is not None

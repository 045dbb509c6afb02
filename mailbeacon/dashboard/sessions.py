"""Login sessions, signed cookies and CSRF tokens.

A session is a random token in a signed, HttpOnly, SameSite=Lax cookie; the server keeps
a row per session (in `installation`, named by a hash of the token, so reading the
database does not give anyone a usable cookie) holding the user, the expiry and the
session's CSRF token. Logging out deletes the row: a copied cookie stops working at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import Connection, delete, select

from mailbeacon.model.clock import now_us
from mailbeacon.settings import Settings
from mailbeacon.storage.db import Database
from mailbeacon.storage.schema import installation, users
from mailbeacon.track.keyring import stored_secret

SESSION_COOKIE = "mb_session"
LOGIN_COOKIE = "mb_login"  # CSRF token of the login form, before there is a session
FLASH_COOKIE = "mb_flash"
SESSION_SECONDS = 7 * 86400  # absolute lifetime: log in again after a week
_ROW_PREFIX = "dash_session:"  # installation.name is String(64): prefix + 48 hex = 61
_PRUNE_EVERY = 3600.0


def cookie_key(settings: Settings, db: Database) -> bytes:
    """The key that signs dashboard cookies, derived from the installation secret."""
    base = settings.secret_key or stored_secret(db)
    return hmac.new(base.encode("utf-8"), b"mailbeacon dashboard cookies v1",
                    hashlib.sha256).digest()


class Signer:
    """`value.signature`, HMAC-SHA256 truncated to 128 bits, URL-safe base64."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, value: str) -> str:
        digest = hmac.new(self._key, value.encode("utf-8"), hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")

    def sign(self, value: str) -> str:
        return f"{value}.{self._mac(value)}"

    def unsign(self, signed: str | None) -> str | None:
        if not signed or len(signed) > 4096:
            return None
        value, _, mac = signed.rpartition(".")
        if not value or not hmac.compare_digest(mac, self._mac(value)):
            return None
        return value


@dataclass(frozen=True)
class Session:
    user_id: str
    username: str
    csrf: str
    expires: int  # µs since the epoch


def _row_name(token: str) -> str:
    return _ROW_PREFIX + hashlib.sha256(token.encode("ascii")).hexdigest()[:48]


class SessionStore:
    """Sessions kept in the database, so every process of an installation shares them."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._last_prune = 0.0

    def create(self, user_id: str) -> str:
        """A new session for the user; returns its token (the cookie value, unsigned)."""
        token = secrets.token_urlsafe(32)
        expires = now_us() + SESSION_SECONDS * 1_000_000
        value = json.dumps({"user": user_id, "csrf": secrets.token_urlsafe(32),
                            "expires": expires})
        with self.db.write() as conn:
            conn.execute(installation.insert().values(name=_row_name(token), value=value))
        self.prune()
        return token

    def load(self, token: str) -> Session | None:
        """The live session of a token, or None (unknown, expired, or user deleted)."""
        with self.db.read() as conn:
            value = conn.execute(select(installation.c.value).where(
                installation.c.name == _row_name(token))).scalar()
            if value is None:
                return None
            data = json.loads(value)
            if data["expires"] < now_us():
                return None
            username = conn.execute(select(users.c.username).where(
                users.c.id == data["user"])).scalar()
        if username is None:
            return None
        return Session(data["user"], username, data["csrf"], data["expires"])

    def delete(self, token: str) -> None:
        with self.db.write() as conn:
            conn.execute(delete(installation).where(installation.c.name == _row_name(token)))

    def delete_user_sessions(self, user_id: str) -> int:
        """End every session of a user (password changed, user deleted)."""
        gone = 0
        with self.db.write() as conn:
            for name, value in self._rows(conn):
                if json.loads(value).get("user") == user_id:
                    conn.execute(delete(installation).where(installation.c.name == name))
                    gone += 1
        return gone

    def prune(self, force: bool = False) -> int:
        """Delete expired sessions (at most once an hour unless forced)."""
        if not force and time.monotonic() - self._last_prune < _PRUNE_EVERY:
            return 0
        self._last_prune = time.monotonic()
        now = now_us()
        gone = 0
        with self.db.write() as conn:
            for name, value in self._rows(conn):
                if json.loads(value).get("expires", 0) < now:
                    conn.execute(delete(installation).where(installation.c.name == name))
                    gone += 1
        return gone

    @staticmethod
    def _rows(conn: Connection) -> list[tuple[str, str]]:
        return [(r.name, r.value) for r in conn.execute(
            select(installation.c.name, installation.c.value).where(
                installation.c.name.startswith(_ROW_PREFIX, autoescape=True)))]


def same_token(presented: str | None, expected: str) -> bool:
    """Constant-time comparison of a CSRF token."""
    return bool(presented) and hmac.compare_digest(
        (presented or "").encode("utf-8"), expected.encode("utf-8"))

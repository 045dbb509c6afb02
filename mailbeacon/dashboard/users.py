"""Dashboard users: scrypt password hashes (stdlib) and the `users` table.

A hash is stored with its parameters and salt, so they can be raised later without
breaking existing passwords::

    scrypt$32768$8$1$<salt, base64>$<key, base64>
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from mailbeacon.errors import BadRequest, NotFound
from mailbeacon.model.clock import now_us
from mailbeacon.model.ids import new_id
from mailbeacon.storage.db import Database
from mailbeacon.storage.schema import users

# About 50-100 ms and 32 MiB per check: slow enough for guessing, fine for one login.
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
KEY_BYTES = 32
SALT_BYTES = 16
MIN_PASSWORD = 8
MAX_PASSWORD = 1024  # scrypt takes any length; a cap stops megabyte "passwords"
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")


@dataclass(frozen=True)
class User:
    id: str
    username: str
    created_at: int
    last_login_at: int | None

    @classmethod
    def from_row(cls, row: Any) -> User:
        return cls(row.id, row.username, row.created_at, row.last_login_at)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=length,
                          maxmem=256 * 1024 * 1024)


def hash_password(password: str) -> str:
    """A new salted hash of `password`, with its parameters."""
    salt = secrets.token_bytes(SALT_BYTES)
    key = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, KEY_BYTES)
    b64 = base64.b64encode
    return (f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}$"
            f"{b64(salt).decode()}${b64(key).decode()}")


def check_password(stored: str, password: str) -> bool:
    """Whether `password` matches the stored hash (constant-time comparison)."""
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(key, validate=True)
        found = _scrypt(password, base64.b64decode(salt, validate=True), int(n), int(r),
                        int(p), len(expected))
    except (ValueError, TypeError):  # a malformed hash never matches
        return False
    return hmac.compare_digest(found, expected)


# Compared against when the username is unknown, so that a wrong name takes as long as a
# wrong password and the timing does not tell which names exist.
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


def check_username(username: str) -> str:
    username = username.strip()
    if not _USERNAME.match(username):
        raise BadRequest("username must be 1 to 64 letters, digits or . _ @ + - "
                         "(starting with a letter or digit)")
    return username


def check_new_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise BadRequest(f"password must have at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise BadRequest(f"password must have at most {MAX_PASSWORD} characters")
    return password


def create_user(db: Database, username: str, password: str) -> User:
    username = check_username(username)
    password_hash = hash_password(check_new_password(password))
    try:
        with db.write() as conn:
            conn.execute(users.insert().values(
                id=new_id(), username=username, password_hash=password_hash,
                created_at=now_us(), last_login_at=None))
    except IntegrityError as exc:
        raise BadRequest(f"user {username!r} already exists") from exc
    return get_user(db, username)


def get_user(db: Database, username: str) -> User:
    with db.read() as conn:
        row = conn.execute(select(users).where(users.c.username == username)).first()
    if row is None:
        raise NotFound(f"no user {username!r}")
    return User.from_row(row)


def list_users(db: Database) -> list[User]:
    with db.read() as conn:
        rows = conn.execute(select(users).order_by(users.c.username)).all()
    return [User.from_row(r) for r in rows]


def set_password(db: Database, username: str, password: str) -> User:
    password_hash = hash_password(check_new_password(password))
    with db.write() as conn:
        changed = conn.execute(update(users).where(users.c.username == username)
                               .values(password_hash=password_hash)).rowcount
    if not changed:
        raise NotFound(f"no user {username!r}")
    return get_user(db, username)


def delete_user(db: Database, username: str) -> User:
    user = get_user(db, username)
    with db.write() as conn:
        conn.execute(delete(users).where(users.c.id == user.id))
    return user


def authenticate(db: Database, username: str, password: str) -> User | None:
    """The user if the password is right (and their last login time is updated)."""
    if len(password) > MAX_PASSWORD:
        return None
    with db.read() as conn:
        row = conn.execute(select(users).where(users.c.username == username.strip())).first()
    if row is None:
        check_password(_DUMMY_HASH, password)
        return None
    if not check_password(row.password_hash, password):
        return None
    now = now_us()
    with db.write() as conn:
        conn.execute(update(users).where(users.c.id == row.id).values(last_login_at=now))
    return User(row.id, row.username, row.created_at, now)

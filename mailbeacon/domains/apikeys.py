"""API keys: made by `mailbeacon keys create` or the dashboard, checked on every API call
and on SMTP AUTH.

A key has a scope (every domain, or one) and a role: `full`, or `send` (only the two
sending routes). Only a SHA-256 of each key is stored, so a copy of the database gives
no usable key; the first characters are kept as a prefix to tell keys apart in lists.
`MAILBEACON_API_KEY` from the settings is a full key for every domain.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from mailbeacon.domains import domain as dom
from mailbeacon.errors import BadRequest, NotFound
from mailbeacon.model.clock import now_us
from mailbeacon.model.ids import new_id
from mailbeacon.storage.db import Database
from mailbeacon.storage.schema import api_keys

log = logging.getLogger("mailbeacon.domains.apikeys")

PREFIX_CHARS = 12  # "key-" and 8 hex digits of 40: 128 unknown bits remain
DESCRIPTION_CHARS = 200


class Role(StrEnum):
    FULL = "full"  # every route of its scope
    SEND = "send"  # POST /v3/{domain}/messages and messages.mime (and SMTP submission)


@dataclass(frozen=True)
class Grant:
    """What the key presented on a request may do."""

    key_id: str  # "" for MAILBEACON_API_KEY
    domain: str | None  # None: every domain
    role: Role

    def may_use(self, domain: str) -> bool:
        """Whether this key may act on `domain` as a request names it (any spelling
        that resolves to the key's domain: the name is normalised first)."""
        if self.domain is None:
            return True
        try:
            return dom.normalize_name(domain) == self.domain
        except BadRequest:
            return False

    def may(self, role: Role) -> bool:
        """Whether this key's role covers what `role` allows."""
        return self.role is Role.FULL or role is Role.SEND


FULL_ACCESS = Grant(key_id="", domain=None, role=Role.FULL)


@dataclass(frozen=True)
class ApiKey:
    """A stored key as lists show it (never the key itself)."""

    id: str
    prefix: str
    description: str
    domain: str | None
    role: Role
    created_at: int
    last_used_at: int | None
    revoked_at: int | None

    @property
    def scope(self) -> str:
        return self.domain or "all domains"

    @classmethod
    def from_row(cls, row: Any) -> ApiKey:
        return cls(id=row.id, prefix=row.prefix, description=row.description,
                   domain=row.domain, role=Role(row.role), created_at=row.created_at,
                   last_used_at=row.last_used_at, revoked_at=row.revoked_at)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_role(value: str) -> Role:
    try:
        return Role(value.strip().lower())
    except ValueError as exc:
        raise BadRequest("role must be 'full' or 'send'") from exc


def create_key(db: Database, description: str = "", *, domain: str | None = None,
               role: Role = Role.FULL) -> str:
    """A new key, returned once; only its hash is kept. `domain`: limit it to that
    domain (which must exist); BadRequest or NotFound saying why not."""
    description = description.strip()
    if len(description) > DESCRIPTION_CHARS:
        raise BadRequest(f"description is longer than {DESCRIPTION_CHARS} characters")
    if any(ord(c) < 32 for c in description):
        raise BadRequest("description must be one line of text")
    scope = dom.get_domain(db, dom.normalize_name(domain)).name if domain else None
    key = "key-" + secrets.token_hex(20)
    with db.write() as conn:
        conn.execute(api_keys.insert().values(
            id=new_id(), key_hash=_digest(key), prefix=key[:PREFIX_CHARS],
            description=description, domain=scope, role=Role(role).value,
            created_at=now_us()))
    return key


def list_keys(db: Database, *, revoked: bool = False,
              domain: str | None = None) -> list[ApiKey]:
    """Keys, oldest first: the active ones, or with `revoked` all. `domain`: only the
    keys that can use it (its own and the all-domains ones)."""
    query = select(api_keys).order_by(api_keys.c.id)
    if not revoked:
        query = query.where(api_keys.c.revoked_at.is_(None))
    if domain is not None:
        query = query.where((api_keys.c.domain.is_(None)) | (api_keys.c.domain == domain))
    with db.read() as conn:
        return [ApiKey.from_row(r) for r in conn.execute(query)]


def revoke_key(db: Database, key_id: str) -> ApiKey:
    """Revoke a key for good (a second revoke changes nothing); NotFound if there is no
    such key. Every process refuses it within `KeyChecker.CACHE_SECONDS`."""
    with db.write() as conn:
        conn.execute(api_keys.update()
                     .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                     .values(revoked_at=now_us()))
        row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
    if row is None:
        raise NotFound(f"No API key with id {key_id!r} (see `mailbeacon keys list`)")
    return ApiKey.from_row(row)


@dataclass
class _Known:
    grant: Grant
    until: float  # clock time after which the database is asked again


@dataclass
class KeyChecker:
    """Tells what a presented key may do, or None for no valid key.

    The configured key is compared in constant time; stored keys are looked up by their
    hash and remembered for CACHE_SECONDS, so a key revoked anywhere stops working in
    every process within that time, while a busy key costs one query per CACHE_SECONDS.
    Its last use is written at most once per TOUCH_SECONDS per key and process.
    """

    db: Database
    configured_key: str = ""
    clock: Callable[[], float] = time.monotonic

    CACHE_SECONDS = 5.0
    TOUCH_SECONDS = 60.0
    MAX_CACHED = 10_000

    _known: dict[str, _Known] = field(default_factory=dict, init=False, repr=False)
    _touched: dict[str, float] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def check(self, key: str) -> Grant | None:
        """The key's grant, or None. Runs SQL: call it off the event loop."""
        if not key:
            return None
        if self.configured_key and hmac.compare_digest(key.encode("utf-8"),
                                                       self.configured_key.encode("utf-8")):
            return FULL_ACCESS
        digest = _digest(key)
        now = self.clock()
        known = self._known.get(digest)
        if known is None or known.until <= now:
            known = self._lookup(digest, now)
            if known is None:
                return None
        self._touch(known.grant.key_id, now)
        return known.grant

    def is_valid(self, key: str) -> bool:
        return self.check(key) is not None

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key, and forget it here at once (other processes within seconds)."""
        revoked = revoke_key(self.db, key_id)
        with self._lock:
            for digest in [d for d, k in self._known.items() if k.grant.key_id == key_id]:
                del self._known[digest]
        return revoked

    def _lookup(self, digest: str, now: float) -> _Known | None:
        with self.db.read() as conn:
            row = conn.execute(
                select(api_keys.c.id, api_keys.c.domain, api_keys.c.role)
                .where(api_keys.c.key_hash == digest, api_keys.c.revoked_at.is_(None))
            ).first()
        with self._lock:
            if row is None:
                self._known.pop(digest, None)
                return None
            if len(self._known) >= self.MAX_CACHED:
                self._known.clear()
            known = _Known(Grant(row.id, row.domain, Role(row.role)),
                           now + self.CACHE_SECONDS)
            self._known[digest] = known
            return known

    def _touch(self, key_id: str, now: float) -> None:
        with self._lock:
            last = self._touched.get(key_id)
            if last is not None and now - last < self.TOUCH_SECONDS:
                return
            if len(self._touched) >= self.MAX_CACHED:
                self._touched.clear()
            self._touched[key_id] = now
        try:
            with self.db.write() as conn:
                conn.execute(api_keys.update().where(api_keys.c.id == key_id)
                             .values(last_used_at=now_us()))
        except SQLAlchemyError:  # a busy or absent database must not refuse the request
            log.warning("could not record the last use of API key %s", key_id,
                        exc_info=True)


@dataclass(frozen=True)
class SessionKey:
    """A key presented once for a whole session (SMTP AUTH): `grant()` checks it again
    each time it is used, so a key revoked mid-session stops working like any other."""

    keys: KeyChecker
    secret: str = field(repr=False)

    def grant(self) -> Grant | None:
        return self.keys.check(self.secret)

"""The webhook sender: posts outbox rows to customer URLs, signed, with retries.

2xx: done. 406: rejected, not retried (Mailgun's rule). Anything else (another status, a
timeout, a refused connection, a TLS error): tried again after 5 min, 10 min, 15 min,
1 h, 2 h and 4 h, then marked failed (visible and replayable). Rows are claimed with a
lease (SKIP LOCKED on PostgreSQL), so several processes share the outbox; a process that
dies mid-post leaves a lease that expires and the post is made again: at least once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import and_, or_, select

from mailbeacon import __version__
from mailbeacon.storage.db import Database, now_us
from mailbeacon.storage.schema import domains, webhook_deliveries
from mailbeacon.webhooks.signing import signature_block
from mailbeacon.webhooks.store import redact, signing_key

log = logging.getLogger("mailbeacon.webhooks")
SECOND = 1_000_000
RETRY_DELAYS = (5 * 60, 10 * 60, 15 * 60, 3600, 2 * 3600, 4 * 3600)  # seconds
USER_AGENT = f"mailbeacon-webhooks/{__version__}"


@dataclass(frozen=True)
class Answer:
    code: int | None  # HTTP status; None when no answer came
    error: str  # what went wrong, or an excerpt of the body

    @property
    def outcome(self) -> str:
        if self.code is not None and 200 <= self.code < 300:
            return "done"
        return "rejected" if self.code == 406 else "retry"


def next_state(answer: Answer, attempts: int, now: int) -> tuple[str, int | None]:
    """(status, next attempt) after attempt number `attempts` got `answer`."""
    if answer.outcome != "retry":
        return answer.outcome, None
    if attempts > len(RETRY_DELAYS):
        return "failed", None
    return "pending", now + RETRY_DELAYS[attempts - 1] * SECOND


async def post(client: httpx.AsyncClient, url: str, payload: dict[str, Any],
               key: str, forbid_private: bool = False) -> Answer:
    if forbid_private and await _private(url):
        return Answer(None, "refused: the URL's host is a private address")
    body = {"signature": signature_block(key), "event-data": payload}
    try:
        response = await client.post(url, json=body, headers={"User-Agent": USER_AGENT})
    except httpx.TimeoutException:
        return Answer(None, "timed out")
    except httpx.HTTPError as exc:  # refused, reset, TLS, bad URL ...
        return Answer(None, f"{type(exc).__name__}: {exc}".replace(url, redact(url)))
    return Answer(response.status_code, response.text[:500])


async def _private(url: str) -> bool:
    """Whether the URL's host is (or resolves to) a non-public address."""
    host = urlsplit(url).hostname or ""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None)
    except OSError:
        return False  # unresolvable: the post fails on its own
    return any(not ipaddress.ip_address(info[4][0]).is_global for info in infos)


class WebhookSender:
    def __init__(self, db: Database, *, timeout: float = 5.0, concurrency: int = 20,
                 poll_interval: float = 1.0, clock: Callable[[], int] = now_us,
                 forbid_private: bool = False) -> None:
        self._db = db
        self._forbid_private = forbid_private
        self._timeout = timeout
        self._concurrency = concurrency
        self._poll = poll_interval
        self.clock = clock
        # A claim must outlive the slowest post; after it, another sender takes over.
        self._lease = int((2 * timeout + 10) * SECOND)
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def wake(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=httpx.Timeout(self._timeout),
                                 follow_redirects=False, trust_env=False)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        async with self.client() as client:
            while True:
                try:
                    handled = await self.run_once(client)
                except Exception:  # keep going: the database may be briefly away
                    log.exception("webhook round failed")
                    handled = 0
                if not handled:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._poll)
                    self._wake.clear()

    async def run_once(self, client: httpx.AsyncClient | None = None) -> int:
        """Claim due deliveries and post each once; returns how many."""
        if client is None:
            async with self.client() as own:
                return await self.run_once(own)
        rows = await asyncio.to_thread(self._claim, self._concurrency * 2)
        keys: dict[str, str] = {}
        for row in rows:
            if row.domain not in keys:
                keys[row.domain] = row.key or await asyncio.to_thread(
                    signing_key, self._db, row.domain)
        limit = asyncio.Semaphore(self._concurrency)

        async def one(row: Any) -> None:
            async with limit:
                answer = await post(client, row.url, json.loads(row.payload), keys[row.domain],
                                    self._forbid_private)
            await asyncio.to_thread(self._record, row, answer)

        await asyncio.gather(*(one(row) for row in rows))
        return len(rows)

    def _claim(self, limit: int) -> list[Any]:
        now = self.clock()
        due = or_(and_(webhook_deliveries.c.status == "pending",
                       webhook_deliveries.c.next_attempt_at <= now),
                  and_(webhook_deliveries.c.status == "sending",
                       webhook_deliveries.c.lease_until < now))
        with self._db.write() as conn:
            ids = conn.execute(
                select(webhook_deliveries.c.id).where(due)
                .order_by(webhook_deliveries.c.next_attempt_at).limit(limit)
                .with_for_update(skip_locked=True)).scalars().all()
            if not ids:
                return []
            conn.execute(webhook_deliveries.update().where(webhook_deliveries.c.id.in_(ids))
                         .values(status="sending", lease_until=now + self._lease,
                                 attempts=webhook_deliveries.c.attempts + 1))
            return list(conn.execute(
                select(webhook_deliveries, domains.c.webhook_signing_key.label("key"))
                .join(domains, domains.c.name == webhook_deliveries.c.domain)
                .where(webhook_deliveries.c.id.in_(ids))).all())

    def _record(self, row: Any, answer: Answer) -> None:
        now = self.clock()
        status, next_at = next_state(answer, row.attempts, now)
        values: dict[str, Any] = {"status": status, "lease_until": None, "last_code": answer.code,
                                  "last_error": answer.error, "last_attempt_at": now}
        if next_at is not None:
            values["next_attempt_at"] = next_at
        if status == "failed":
            log.warning("webhook %s to %s failed for good after %d attempts", row.webhook,
                        redact(row.url), row.attempts)
        with self._db.write() as conn:
            conn.execute(webhook_deliveries.update().where(
                webhook_deliveries.c.id == row.id, webhook_deliveries.c.status == "sending",
                webhook_deliveries.c.attempts == row.attempts).values(**values))

"""The webhook sender: posts outbox rows to customer URLs, signed, with retries.

2xx: done. 406: rejected, not retried (Mailgun's rule). Anything else (another status, a
timeout, a refused connection, a TLS error): tried again after 5 min, 10 min, 15 min,
1 h, 2 h and 4 h, then marked failed (visible and replayable). Rows are claimed with a
lease (SKIP LOCKED on PostgreSQL), so several processes share the outbox; a process that
dies mid-post leaves a lease that expires and the post is made again: at least once.

Posts run side by side, up to `concurrency` at once and `per_endpoint` to one endpoint
(scheme, host and port): a new row is claimed as soon as a post ends, never after a whole
batch, and rows for an endpoint that has all its slots are left to wait in the outbox, so
a slow endpoint holds its own slots and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import and_, or_, select

from mailbeacon.model.clock import now_us
from mailbeacon.storage.db import Database
from mailbeacon.storage.schema import domains, webhook_deliveries
from mailbeacon.webhooks.outgoing import Answer, post
from mailbeacon.webhooks.store import redact, signing_key

log = logging.getLogger("mailbeacon.webhooks")
SECOND = 1_000_000
RETRY_DELAYS = (5 * 60, 10 * 60, 15 * 60, 3600, 2 * 3600, 4 * 3600)  # seconds
CONCURRENCY = 20  # posts in flight per process
PER_ENDPOINT = 5  # of them to one endpoint


def next_state(answer: Answer, attempts: int, now: int) -> tuple[str, int | None]:
    """(status, next attempt) after attempt number `attempts` got `answer`."""
    if answer.outcome != "retry":
        return answer.outcome, None
    if attempts > len(RETRY_DELAYS):
        return "failed", None
    return "pending", now + RETRY_DELAYS[attempts - 1] * SECOND


def endpoint_of(url: str) -> str:
    """What the per-endpoint bound counts by: scheme://host:port, lowercased."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    scheme = parts.scheme.lower()
    default = 443 if scheme == "https" else 80
    return f"{scheme}://{(parts.hostname or '').lower()}:{port or default}"


class WebhookSender:
    def __init__(self, db: Database, *, timeout: float = 5.0, concurrency: int = CONCURRENCY,
                 per_endpoint: int = PER_ENDPOINT, poll_interval: float = 1.0,
                 clock: Callable[[], int] = now_us, forbid_private: bool = False) -> None:
        self._db = db
        self._forbid_private = forbid_private
        self._timeout = timeout
        self._concurrency = concurrency
        self._per_endpoint = min(per_endpoint, concurrency)
        self._poll = poll_interval
        self.clock = clock
        # A claim must outlive the slowest post (bounded by the timeout) and its record;
        # after it, another sender takes over.
        self._lease = int((2 * timeout + 10) * SECOND)
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._busy: Counter[str] = Counter()  # posts in flight per endpoint
        # The URLs of each busy endpoint: a claim passes over them while the endpoint has
        # all its slots (several URLs may name one endpoint).
        self._urls: dict[str, set[str]] = {}

    def wake(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def client(self) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=self._concurrency,
                              max_keepalive_connections=self._concurrency)
        return httpx.AsyncClient(timeout=httpx.Timeout(self._timeout), limits=limits,
                                 follow_redirects=False, trust_env=False)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        posts: set[asyncio.Task[None]] = set()
        async with self.client() as client:
            try:
                while True:
                    self._wake.clear()  # before claiming: a post ending meanwhile wakes us
                    free = self._concurrency - sum(self._busy.values())
                    learned = False
                    if free > 0:
                        try:
                            rows, learned = await self._claim_free(free)
                        except Exception:  # keep going: the database may be briefly away
                            log.exception("webhook claim failed")
                            rows = []
                        for row in rows:
                            task = asyncio.create_task(self._deliver(client, row))
                            posts.add(task)
                            task.add_done_callback(posts.discard)
                    if learned:
                        continue  # rows of full endpoints were in the way: look past them
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a
                    # cancellation that races the wake-up, and shutdown would wait forever.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._poll):
                            await self._wake.wait()
            finally:
                for task in posts:
                    task.cancel()
                await asyncio.gather(*posts, return_exceptions=True)

    async def run_once(self, client: httpx.AsyncClient | None = None) -> int:
        """Claim due deliveries and post each once; returns how many."""
        if client is None:
            async with self.client() as own:
                return await self.run_once(own)
        rows, _ = await self._claim_free(self._concurrency)
        await asyncio.gather(*(self._deliver(client, row) for row in rows))
        return len(rows)

    async def _claim_free(self, limit: int) -> tuple[list[Any], bool]:
        """Claim up to `limit` rows within the endpoints' bounds and count them as busy;
        also whether rows of full endpoints with URLs not known yet were passed over."""
        full = [url for endpoint, n in self._busy.items() if n >= self._per_endpoint
                for url in self._urls.get(endpoint, ())]
        rows, passed = await asyncio.to_thread(self._claim, limit, dict(self._busy), full)
        for row in rows:
            endpoint = endpoint_of(row.url)
            self._busy[endpoint] += 1
            self._urls.setdefault(endpoint, set()).add(row.url)
        learned = False
        for url in passed:
            known = self._urls.setdefault(endpoint_of(url), set())
            learned |= url not in known
            known.add(url)
        return rows, learned

    async def _deliver(self, client: httpx.AsyncClient, row: Any) -> None:
        endpoint = endpoint_of(row.url)
        try:
            key = row.key or await asyncio.to_thread(signing_key, self._db, row.domain)
            answer = await post(client, row.url, row.payload, key,
                                timeout=self._timeout, forbid_private=self._forbid_private)
            await asyncio.to_thread(self._record, row, answer)
        except Exception:  # the lease runs out and the post is made again
            log.exception("webhook %s to %s not recorded", row.id, redact(row.url))
        finally:
            self._busy[endpoint] -= 1
            if self._busy[endpoint] <= 0:
                del self._busy[endpoint]
                self._urls.pop(endpoint, None)
            self._wake.set()

    def _claim(self, limit: int, busy: Mapping[str, int],
               full: Collection[str]) -> tuple[list[Any], list[str]]:
        """(claimed rows, URLs passed over because their endpoint is full)."""
        now = self.clock()
        due = or_(and_(webhook_deliveries.c.status == "pending",
                       webhook_deliveries.c.next_attempt_at <= now),
                  and_(webhook_deliveries.c.status == "sending",
                       webhook_deliveries.c.lease_until < now))
        query = select(webhook_deliveries.c.id, webhook_deliveries.c.url).where(due)
        if full:
            query = query.where(webhook_deliveries.c.url.not_in(sorted(full)))
        counts = Counter(busy)
        ids: list[str] = []
        passed: set[str] = set()
        with self._db.write() as conn:
            for row in conn.execute(
                    query.order_by(webhook_deliveries.c.next_attempt_at)
                    .limit(2 * limit + 2 * self._per_endpoint)
                    .with_for_update(skip_locked=True)):
                endpoint = endpoint_of(row.url)
                if counts[endpoint] >= self._per_endpoint:
                    passed.add(row.url)
                elif len(ids) < limit:
                    ids.append(row.id)
                    counts[endpoint] += 1
            if not ids:
                return [], sorted(passed)
            conn.execute(webhook_deliveries.update().where(webhook_deliveries.c.id.in_(ids))
                         .values(status="sending", lease_until=now + self._lease,
                                 attempts=webhook_deliveries.c.attempts + 1))
            rows = list(conn.execute(
                select(webhook_deliveries, domains.c.webhook_signing_key.label("key"))
                .join(domains, domains.c.name == webhook_deliveries.c.domain)
                .where(webhook_deliveries.c.id.in_(ids))
                .order_by(webhook_deliveries.c.next_attempt_at)).all())
        return rows, sorted(passed)

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

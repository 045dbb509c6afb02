"""The delivery worker: claims due deliveries and relays them, one SMTP transaction each.

Deliveries are jobs in the `deliveries` table. A claim sets a lease; a worker that dies
mid-send leaves a lease that expires, and the delivery is tried again (at least once).
On PostgreSQL claims use SKIP LOCKED, so any number of workers share the table safely.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_, select

from mailbeacon.domains import Domain
from mailbeacon.events import EventType, MessageInfo, Severity, build_event
from mailbeacon.send.compose import Composer, Tracking
from mailbeacon.send.relay import Outcome, Relay
from mailbeacon.send.submission import TrackingOptions
from mailbeacon.storage.db import Database, now_us
from mailbeacon.storage.records import write_events
from mailbeacon.storage.schema import deliveries, domains, messages
from mailbeacon.track.tokens import TokenCodec

log = logging.getLogger("mailbeacon.worker")
LEASE_US = 5 * 60 * 1_000_000


@dataclass(frozen=True)
class Job:
    delivery_id: str
    recipient: str
    attempt: int
    message_row: Any
    domain: Domain


class DeliveryWorker:
    def __init__(self, db: Database, relay: Relay, codec: TokenCodec, default_base: str,
                 concurrency: int = 10, poll_interval: float = 1.0) -> None:
        self._db = db
        self._relay = relay
        self._codec = codec
        self._default_base = default_base
        self._concurrency = max(1, concurrency)
        self._poll = poll_interval
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def wake(self) -> None:
        """Look for work now (callable from any thread, e.g. after intake)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        while True:
            try:
                handled = await self.run_once()
            except Exception:  # the database may be briefly away; keep the worker alive
                log.exception("delivery round failed")
                handled = 0
            if not handled:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll)
                self._wake.clear()

    async def run_once(self) -> int:
        """Claim one batch of due deliveries and try each; returns how many."""
        jobs = await asyncio.to_thread(self._claim, self._concurrency * 4)
        composers: dict[str, Composer] = {}
        for job in jobs:
            if job.message_row.id not in composers:
                options = TrackingOptions.from_json(_json(job.message_row.options))
                tracking = Tracking.resolve(job.domain, options, self._default_base)
                composers[job.message_row.id] = Composer(job.message_row.mime, tracking,
                                                         self._codec)
        limit = asyncio.Semaphore(self._concurrency)

        async def deliver(job: Job) -> None:
            async with limit:
                started = time.monotonic()
                payload = composers[job.message_row.id].render(job.delivery_id)
                outcome = await self._relay.send(payload, job.message_row.sender, job.recipient)
                seconds = time.monotonic() - started
            await asyncio.to_thread(self._record, job, outcome, seconds)

        await asyncio.gather(*(deliver(job) for job in jobs))
        return len(jobs)

    def _claim(self, limit: int) -> list[Job]:
        now = now_us()
        due = or_(
            and_(deliveries.c.status == "queued", deliveries.c.next_attempt_at <= now),
            and_(deliveries.c.status == "sending", deliveries.c.lease_until < now),
        )
        with self._db.write() as conn:
            ids = conn.execute(
                select(deliveries.c.id).where(due).order_by(deliveries.c.next_attempt_at)
                .limit(limit).with_for_update(skip_locked=True)
            ).scalars().all()
            if not ids:
                return []
            conn.execute(
                deliveries.update().where(deliveries.c.id.in_(ids)).values(
                    status="sending", lease_until=now + LEASE_US,
                    attempts=deliveries.c.attempts + 1, updated_at=now))
            rows = conn.execute(
                select(deliveries.c.id.label("delivery_id"), deliveries.c.recipient,
                       deliveries.c.attempts, messages, domains.c.id.label("domain_key"),
                       domains.c.created_at.label("domain_created_at"),
                       domains.c.track_opens, domains.c.track_clicks, domains.c.pixel_top,
                       domains.c.tracking_url)
                .join(messages, messages.c.id == deliveries.c.message_id)
                .join(domains, domains.c.name == messages.c.domain)
                .where(deliveries.c.id.in_(ids))
            ).all()
        return [
            Job(r.delivery_id, r.recipient, r.attempts, r,
                Domain(r.domain, r.domain_key, r.domain_created_at, bool(r.track_opens),
                       r.track_clicks, bool(r.pixel_top), r.tracking_url))
            for r in rows
        ]

    def _record(self, job: Job, outcome: Outcome, seconds: float) -> None:
        info = MessageInfo.from_row(job.message_row)
        status = {
            "code": outcome.code, "message": outcome.message,
            "description": outcome.description, "attempt-no": job.attempt,
            "mx-host": self._relay.host, "session-seconds": round(seconds, 3),
        }
        envelope = {"sender": info.sender, "targets": job.recipient, "transport": "smtp"}
        if outcome.delivered:
            new_status = "delivered"
            event = build_event(EventType.DELIVERED, now_us(), info, job.recipient,
                                job.delivery_id, delivery_status=status, envelope=envelope)
        else:
            # Retries with backoff arrive with issue 3; for now every failure is final.
            new_status = "failed"
            severity = Severity.PERMANENT if outcome.permanent else Severity.TEMPORARY
            event = build_event(EventType.FAILED, now_us(), info, job.recipient,
                                job.delivery_id, severity=severity,
                                reason="bounce" if outcome.permanent else "generic",
                                delivery_status=status, envelope=envelope)
        with self._db.write() as conn:
            owned = conn.execute(
                deliveries.update()
                .where(deliveries.c.id == job.delivery_id, deliveries.c.status == "sending",
                       deliveries.c.attempts == job.attempt)
                .values(status=new_status, lease_until=None, last_code=outcome.code,
                        last_message=outcome.message or outcome.description,
                        updated_at=now_us())
            ).rowcount
            if owned:  # else our lease expired and another worker took the job over
                write_events(conn, [event])


def _json(text: str) -> dict[str, Any]:
    import json

    value = json.loads(text)
    return value if isinstance(value, dict) else {}

"""The delivery worker: claims due deliveries and relays them, one SMTP transaction each.

Deliveries are jobs in the `deliveries` table. A claim sets a lease; a worker that dies
mid-send leaves a lease that expires, and the delivery is tried again (at least once).
On PostgreSQL claims use SKIP LOCKED, so any number of workers share the table safely.

A temporary failure (4xx, timeout, connection trouble) is retried with backoff: the
first retry after `retry_first` seconds, each next one after twice the previous delay,
until `retry_max_age` after the first attempt; then the failure is permanent.

Each delivery of a round is composed and relayed on its own: one that cannot be composed
(an unknown charset, a header that cannot be written, MIME nested too deeply) fails
permanently with the reason in its `failed` event, and its neighbours go on as if it
were not there. Composition runs off the event loop (compose_pool.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, or_, select

from mailbeacon.domains.domain import Domain
from mailbeacon.events.vocabulary import EventRecord, EventType, MessageInfo, Severity, build_event
from mailbeacon.events.writer import write_events
from mailbeacon.model.clock import now_us
from mailbeacon.model.tokens import TokenCodec
from mailbeacon.send.compose import Tracking
from mailbeacon.send.compose_pool import COMPOSER_CACHE, ComposePool, CompositionError, Draft
from mailbeacon.send.options import TrackingOptions
from mailbeacon.send.refusal import RelayFailure
from mailbeacon.send.transport import Outcome, Parcel, Transport
from mailbeacon.storage.db import Database
from mailbeacon.storage.schema import deliveries, domains, messages
from mailbeacon.suppress.rules import Block, blocks_each

log = logging.getLogger("mailbeacon.worker")
LEASE_US = 5 * 60 * 1_000_000
SECOND = 1_000_000
TESTMODE = Outcome(650, "OK: test mode, not relayed")


@dataclass(frozen=True)
class RetryPolicy:
    first: float = 600.0  # seconds before the first retry; each next one waits twice as long
    max_age: float = 8 * 3600.0  # give up this long after the first attempt

    def next_attempt(self, attempt: int, first_at: int, now: int) -> int | None:
        """When to try again after failed attempt number `attempt`; None: give up."""
        deadline = first_at + int(self.max_age * SECOND)
        if now >= deadline:
            return None
        return min(now + int(self.first * SECOND * 2 ** (attempt - 1)), deadline)


@dataclass(frozen=True)
class Unsendable:
    """A delivery that cannot be sent at all (its message cannot be composed): it fails
    permanently, alone, is never relayed, and is no bounce of the address."""

    reason: str


@dataclass(frozen=True)
class Job:
    delivery_id: str
    recipient: str
    attempt: int
    first_attempt_at: int
    message_row: Any  # the messages row without its MIME (that is in `draft`)
    domain: Domain
    block: Block | None
    draft: Draft | Unsendable = Unsendable("")  # Unsendable: no usable stored message


Result = tuple[Job, Outcome | Unsendable | None, float]
# A delivery's new row values, its event, and what the relay's refusal does to the
# address (suppression, soft-bounce count), applied in the same transaction.
Change = tuple[Job, dict[str, Any], EventRecord | None, RelayFailure | None]


class DeliveryWorker:
    def __init__(self, db: Database, transport: Transport, codec: TokenCodec,
                 default_base: str, concurrency: int = 10, poll_interval: float = 1.0,
                 retry: RetryPolicy | None = None,
                 clock: Callable[[], int] = now_us,
                 compose_pool: ComposePool | None = None) -> None:
        self._db = db
        self._transport = transport
        self._codec = codec
        self._default_base = default_base
        self._concurrency = max(1, concurrency)
        self._poll = poll_interval
        self._retry = retry or RetryPolicy()
        self.clock = clock
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool = compose_pool or ComposePool(codec)
        # Drafts of recent messages (read by `_claim` only): a batch of 1,000 recipients
        # spans many claims, and its MIME is read from the database once.
        self._drafts: OrderedDict[str, Draft | Unsendable] = OrderedDict()

    def wake(self) -> None:
        """Look for work now (callable from any thread, e.g. after intake)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    handled = await self.run_once()
                except Exception:  # the database may be briefly away; keep the worker alive
                    log.exception("delivery round failed")
                    handled = 0
                if not handled:
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a
                    # cancellation that races the wake-up, and shutdown would wait forever.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._poll):
                            await self._wake.wait()
                    self._wake.clear()
        finally:
            self.close()

    def close(self) -> None:
        """Stop the composing thread and processes."""
        self._pool.close()

    async def run_once(self) -> int:
        """Claim one batch of due deliveries and try each; returns how many."""
        jobs = await asyncio.to_thread(self._claim, self._concurrency * 4)
        limit = asyncio.Semaphore(self._concurrency)

        async def deliver(job: Job) -> Result:
            async with limit:
                started = time.monotonic()
                try:
                    outcome = await self._attempt(job)
                except Exception as exc:  # unforeseen, and this delivery's alone
                    log.exception("delivery %s: sending failed", job.delivery_id)
                    outcome = Outcome(0, "", f"unexpected error while sending: {exc}")
                return job, outcome, time.monotonic() - started

        # One transaction records the whole batch: far fewer commits than one per message.
        results = await asyncio.gather(*(deliver(job) for job in jobs))
        if results:
            await asyncio.to_thread(self._record, results)
        return len(jobs)

    async def _attempt(self, job: Job) -> Outcome | Unsendable | None:
        """Compose and relay one delivery; None: suppressed, never relayed."""
        if job.block is not None:
            return None
        if job.message_row.testmode:
            return TESTMODE
        if isinstance(job.draft, Unsendable):
            return job.draft
        try:
            composed = await self._pool.compose(job.draft, job.delivery_id, job.recipient)
        except CompositionError as exc:
            return Unsendable(str(exc))
        return await self._transport.send(Parcel(job.delivery_id, composed.envelope_sender,
                                                 job.recipient, composed.data, composed.wire))

    def _draft(self, row: Any, domain: Domain, mime: bytes | None) -> Draft | Unsendable:
        """What composing this message needs; Unsendable when its row is unusable."""
        if mime is None:
            return Unsendable("could not compose the message: its stored MIME is gone")
        try:
            options = TrackingOptions.from_json(json.loads(row.options))
            rvars = json.loads(row.recipient_variables) if row.recipient_variables else None
            tracking = Tracking.resolve(domain, options, self._default_base)
        except Exception as exc:
            log.exception("message %s: its stored options are unusable", row.id)
            return Unsendable(f"could not compose the message: unusable options: {exc}")
        return Draft(_draft_key(row, domain), mime, domain, tracking, rvars)

    def _drafts_of(self, conn: Any, rows: Sequence[Any],
                   by_name: dict[str, Domain]) -> list[Draft | Unsendable]:
        """Each row's draft, reading the MIME only of messages not seen recently."""
        cache = self._drafts
        missing = {r.id for r in rows if _draft_key(r, by_name[r.domain]) not in cache}
        mimes = dict(conn.execute(select(messages.c.id, messages.c.mime)
                                  .where(messages.c.id.in_(sorted(missing)))).all()) \
            if missing else {}
        found = []
        for r in rows:
            key = _draft_key(r, by_name[r.domain])
            if key not in cache:
                cache[key] = self._draft(r, by_name[r.domain], mimes.get(r.id))
                if len(cache) > COMPOSER_CACHE:
                    cache.popitem(last=False)
            cache.move_to_end(key)
            found.append(cache[key])
        return found

    def _claim(self, limit: int) -> list[Job]:
        now = self.clock()
        due = or_(
            and_(deliveries.c.status == "queued", deliveries.c.next_attempt_at <= now),
            and_(deliveries.c.status == "sending", deliveries.c.lease_until < now),
        )
        query = select(deliveries.c.id).where(due)
        with self._db.write() as conn:
            ids = conn.execute(
                query.order_by(deliveries.c.next_attempt_at).limit(limit)
                .with_for_update(skip_locked=True, of=deliveries)
            ).scalars().all()
            if not ids:
                return []
            conn.execute(
                deliveries.update().where(deliveries.c.id.in_(ids)).values(
                    status="sending", lease_until=now + LEASE_US,
                    attempts=deliveries.c.attempts + 1, updated_at=now))
            conn.execute(
                deliveries.update().where(deliveries.c.id.in_(ids),
                                          deliveries.c.first_attempt_at.is_(None))
                .values(first_attempt_at=now))
            rows = conn.execute(
                select(deliveries.c.id.label("delivery_id"), deliveries.c.recipient,
                       deliveries.c.attempts, deliveries.c.first_attempt_at,
                       *[c for c in messages.c if c.name != "mime"])
                .join(messages, messages.c.id == deliveries.c.message_id)
                .where(deliveries.c.id.in_(ids))
            ).all()
            names = sorted({r.domain for r in rows})
            by_name = {d.name: Domain.from_row(d) for d in conn.execute(
                select(domains).where(domains.c.name.in_(names)))}
            # One suppression query for the whole batch, not one per delivery.
            found = blocks_each(conn, [_suppression_check(r) for r in rows])
            drafts = self._drafts_of(conn, rows, by_name)
        return [
            Job(r.delivery_id, r.recipient, r.attempts, r.first_attempt_at, r,
                by_name[r.domain], block, draft)
            for r, block, draft in zip(rows, found, drafts, strict=True)
        ]

    def _record(self, results: Sequence[Result]) -> None:
        """Store the outcomes of a batch; a job whose lease another worker took over
        (ours expired) is left to that worker. When the batch cannot be stored, each
        delivery is stored on its own, so that one bad row holds back no other."""
        changes = [self._change(result) for result in results]
        try:
            with self._db.write() as conn:
                self._store(conn, changes)
            return
        except Exception:
            if len(changes) == 1:
                raise
            log.exception("recording %d deliveries failed; recording each alone", len(changes))
        failures = 0
        for change in changes:
            try:
                with self._db.write() as conn:
                    self._store(conn, [change])
            except Exception:
                failures += 1
                log.exception("delivery %s: recording its result failed", change[0].delivery_id)
        if failures == len(changes):
            raise RuntimeError("recording the round failed (is the database away?)")

    def _change(self, result: Result) -> Change:
        """The row values and event of one result; when building the event fails (a
        message row we cannot read), the status alone, so the delivery is not sent again."""
        job, outcome, seconds = result
        try:
            if isinstance(outcome, Unsendable):
                return self._unsendable(job, outcome)
            return self._outcome(job, outcome, seconds)
        except Exception:
            log.exception("delivery %s: its event cannot be built", job.delivery_id)
            delivered = isinstance(outcome, Outcome) and (outcome.delivered
                                                          or outcome is TESTMODE)
            return job, {"status": "delivered" if delivered else "failed",
                         "lease_until": None, "updated_at": self.clock()}, None, None

    def _unsendable(self, job: Job, problem: Unsendable) -> Change:
        now = self.clock()
        event = build_event(
            EventType.FAILED, now, MessageInfo.from_row(job.message_row), job.recipient,
            job.delivery_id, severity=Severity.PERMANENT, reason="generic",
            envelope={"sender": job.message_row.sender, "targets": job.recipient,
                      "transport": "smtp"},
            delivery_status={"code": 0, "message": problem.reason, "description": "",
                             "attempt-no": job.attempt})
        return job, {"status": "failed", "lease_until": None, "updated_at": now,
                     "last_code": 0, "last_message": problem.reason[:1000]}, event, None

    def _store(self, conn: Any, changes: Sequence[Change]) -> None:
        # Which leases are still ours, locked until commit (PostgreSQL; SQLite's
        # write lock covers it); then one UPDATE per set of columns for all of them.
        attempts = {row.id: row.attempts for row in conn.execute(
            select(deliveries.c.id, deliveries.c.attempts)
            .where(deliveries.c.id.in_([change[0].delivery_id for change in changes]),
                   deliveries.c.status == "sending")
            .with_for_update(of=deliveries))}
        mine = [change for change in changes
                if attempts.get(change[0].delivery_id) == change[0].attempt]
        updates: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for job, values, _, _ in mine:
            updates.setdefault(tuple(values), []).append(
                {"b_id": job.delivery_id, "b_attempt": job.attempt,
                 **{f"b_{name}": value for name, value in values.items()}})
        for names, rows in updates.items():
            conn.execute(
                deliveries.update()
                .where(deliveries.c.id == bindparam("b_id"),
                       deliveries.c.status == "sending",
                       deliveries.c.attempts == bindparam("b_attempt"))
                .values({name: bindparam(f"b_{name}") for name in names}), rows)
        write_events(conn, [event for _, _, event, _ in mine if event is not None])
        now = self.clock()
        for job, _, _, failure in mine:
            if failure is not None:
                failure.apply(conn, job.delivery_id, job.domain, job.recipient, now)

    def _outcome(self, job: Job, outcome: Outcome | None, seconds: float) -> Change:
        now = self.clock()
        info = MessageInfo.from_row(job.message_row)
        envelope = {"sender": info.sender, "targets": job.recipient, "transport": "smtp"}
        retry_at: int | None = None
        failure: RelayFailure | None = None
        if outcome is None:  # suppressed: never relayed
            assert job.block is not None
            new_status = "failed"
            event = build_event(
                EventType.FAILED, now, info, job.recipient, job.delivery_id,
                severity=Severity.PERMANENT, reason=job.block.reason, envelope=envelope,
                delivery_status={"code": 605, "message": "Not delivering to previously "
                                 f"{_BLOCK_WORDS[job.block.kind]} address",
                                 "description": job.block.error, "attempt-no": job.attempt})
        else:
            status = {
                "code": outcome.code, "message": outcome.message,
                "description": outcome.description, "attempt-no": job.attempt,
                "mx-host": self._transport.host if outcome is not TESTMODE else "",
                "session-seconds": round(seconds, 3),
            }
            failure = RelayFailure.of(outcome.code, outcome.message, outcome.permanent)
            if failure is not None:  # classified as a returned bounce would be
                status.update(failure.status_fields())
            new_status, event, retry_at = self._outcome_event(job, outcome, status, envelope,
                                                              info, now)
            if failure is not None and retry_at is None and not outcome.permanent:
                failure = failure.gave_up()
        values: dict[str, Any] = {
            "status": new_status, "lease_until": None, "updated_at": now,
            "last_code": outcome.code if outcome else 605,
            "last_message": (outcome.message or outcome.description) if outcome
            else job.block.reason if job.block else "",
        }
        if retry_at is not None:
            values["next_attempt_at"] = retry_at
        return job, values, event, failure

    def _outcome_event(self, job: Job, outcome: Outcome, status: dict[str, Any],
                       envelope: dict[str, Any], info: MessageInfo,
                       now: int) -> tuple[str, EventRecord, int | None]:
        if outcome.delivered or outcome is TESTMODE:
            event = build_event(EventType.DELIVERED, now, info, job.recipient,
                                job.delivery_id, delivery_status=status, envelope=envelope)
            return "delivered", event, None
        if outcome.permanent:
            event = build_event(EventType.FAILED, now, info, job.recipient, job.delivery_id,
                                severity=Severity.PERMANENT, reason="bounce",
                                delivery_status=status, envelope=envelope)
            return "failed", event, None
        retry_at = self._retry.next_attempt(job.attempt, job.first_attempt_at or now, now)
        if retry_at is None:
            status["description"] = (status["description"] + " " if status["description"]
                                     else "") + "Gave up: still failing temporarily after " \
                f"{self._retry.max_age / 3600:g} hours"
            event = build_event(EventType.FAILED, now, info, job.recipient, job.delivery_id,
                                severity=Severity.PERMANENT, reason="old",
                                delivery_status=status, envelope=envelope)
            return "failed", event, None
        status["retry-seconds"] = round((retry_at - now) / SECOND)
        event = build_event(EventType.FAILED, now, info, job.recipient, job.delivery_id,
                            severity=Severity.TEMPORARY, reason="generic",
                            delivery_status=status, envelope=envelope)
        return "queued", event, retry_at


def _suppression_check(row: Any) -> tuple[str, str, list[str], str | None]:
    """What suppressions are looked up by; a row whose JSON is unreadable is looked up
    by its address alone (and fails later, alone, if it cannot be sent)."""
    try:
        tags, list_id = json.loads(row.tags), json.loads(row.headers).get("list-id")
    except (ValueError, TypeError, AttributeError):
        log.warning("message %s: unreadable tags or headers", row.id)
        tags, list_id = [], None
    return row.domain, row.recipient, tags if isinstance(tags, list) else [], list_id


def _draft_key(row: Any, domain: Domain) -> str:
    return f"{row.id}/{hash(domain)}"  # a settings change makes a new composer


_BLOCK_WORDS = {"bounce": "bounced", "unsubscribe": "unsubscribed",
                "complaint": "complained", "allowlist": "allowlisted"}

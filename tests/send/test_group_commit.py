"""Group commit of intake, and the delivery worker's batched suppression check and outcome
recording: concurrent messages share a transaction, and nothing changes for any one of
them (stored, answered once, failed alone when it is the bad one)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError

from mailbeacon.domains import domain as dom
from mailbeacon.domains.domain import Domain
from mailbeacon.model.clock import now_us
from mailbeacon.send import intake
from mailbeacon.send.intake import Intake, IntakeWriter
from mailbeacon.send.relay import Relay
from mailbeacon.send.submission import Submission
from mailbeacon.send.transport import Outcome
from mailbeacon.send.worker import DeliveryWorker
from mailbeacon.storage.db import Database
from mailbeacon.storage.schema import contacts, deliveries, events, messages, stats_buckets
from mailbeacon.suppress import rules as suppressions
from mailbeacon.suppress.rules import SuppressionKind
from tests.support import API_KEY, Service, SmtpRelay


class Gate:
    """Holds the first `held` intake batches inside their transactions until released
    (so that the requests arriving meanwhile queue up for one batch); `fail` may make a
    batch fail. `sizes` are the batches written, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, held: int = 1) -> None:
        self.entries = [threading.Event() for _ in range(held)]
        self.releases = [threading.Event() for _ in range(held)]
        self.sizes: list[int] = []
        self.fail: Callable[[Sequence[Intake]], Exception | None] = lambda batch: None
        real = intake.write_intakes

        def write(conn: sa.Connection, batch: Sequence[Intake]) -> None:
            self.sizes.append(len(batch))
            number = len(self.sizes) - 1
            if number < held:
                self.entries[number].set()
                assert self.releases[number].wait(30), "the test never released a batch"
            problem = self.fail(batch)
            if problem is not None:
                raise problem
            real(conn, batch)

        monkeypatch.setattr(intake, "write_intakes", write)

    @property
    def entered(self) -> threading.Event:
        return self.entries[0]

    @property
    def release(self) -> threading.Event:
        return self.releases[0]

    def open(self) -> None:
        for event in self.releases:
            event.set()


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def submission(recipient: str) -> Submission:
    return Submission(sender=("Shop", "shop@example.com"), to=[("", recipient)],
                      subject=f"Hello {recipient}", text="Hi", html="<p>Hi</p>")


def accept(writer: IntakeWriter, domain: Domain, sub: Submission) -> str:
    return writer.accept(domain, sub.outgoing(domain.name))


class Sender:
    """accept() in a thread of its own; what it returned or raised, once."""

    def __init__(self, writer: IntakeWriter, domain: Domain, recipient: str) -> None:
        self.results: list[str] = []
        self.errors: list[BaseException] = []

        def run() -> None:
            try:
                self.results.append(accept(writer, domain, submission(recipient)))
            except BaseException as exc:
                self.errors.append(exc)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self) -> None:
        self.thread.join(30)
        assert not self.thread.is_alive(), "accept() never returned"
        assert len(self.results) + len(self.errors) == 1


@pytest.fixture
def domain(db: Database) -> Domain:
    return dom.add_domain(db, "example.com")


@pytest.fixture
def writer(db: Database) -> IntakeWriter:
    return IntakeWriter(db)


def count(db: Database, table: sa.Table, *where: Any) -> int:
    with db.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)
                                .where(*where)).scalar_one())


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    found = Gate(monkeypatch, held=2)
    yield found
    found.open()  # never leave a thread waiting, whatever the test did


def test_concurrent_intakes_share_one_commit(db: Database, domain: Domain,
                                             writer: IntakeWriter,
                                             gate: Gate) -> None:
    first = Sender(writer, domain, "user0@example.org")
    assert gate.entered.wait(10)
    rest = [Sender(writer, domain, f"user{i}@example.org") for i in range(1, 10)]
    wait_until(lambda: writer.waiting == 9)
    time.sleep(0.05)
    # Nobody is answered before their transaction commits, and nothing is visible yet.
    assert not any(s.results or s.errors for s in [first, *rest])
    assert count(db, messages) == 0
    gate.release.set()
    first.join()
    # The nine that waited are one batch, now inside its transaction: still unanswered.
    assert gate.entries[1].wait(10)
    time.sleep(0.05)
    assert not any(s.results or s.errors for s in rest)
    assert count(db, messages) == 1
    gate.releases[1].set()
    for sender in rest:
        sender.join()
    assert not any(s.errors for s in [first, *rest])
    ids = [s.results[0] for s in [first, *rest]]
    assert len(set(ids)) == 10
    assert gate.sizes == [1, 9]
    assert (writer.batches, writer.messages) == (2, 10)
    with db.read() as conn:
        stored = set(conn.execute(sa.select(messages.c.message_id)).scalars())
        rows = conn.execute(sa.select(deliveries.c.recipient, deliveries.c.status)).all()
        accepted = conn.execute(sa.select(events.c.message_id, events.c.recipient)
                                .where(events.c.event == "accepted")).all()
        stats = conn.execute(sa.select(sa.func.sum(stats_buckets.c.count)).where(
            stats_buckets.c.event == "accepted", stats_buckets.c.tag == "")).scalar()
    assert stored == set(ids)
    assert sorted(rows) == sorted((f"user{i}@example.org", "queued") for i in range(10))
    assert sorted(m for m, _ in accepted) == sorted(ids)
    assert stats == 10
    assert count(db, contacts) == 10


def test_a_failed_batch_fails_each_of_its_requests(db: Database, domain: Domain,
                                                   writer: IntakeWriter, gate: Gate) -> None:
    gate.fail = lambda batch: (OperationalError("INSERT", {}, Exception("database is away"))
                               if len(batch) > 1 else None)
    first = Sender(writer, domain, "first@example.org")
    assert gate.entered.wait(10)
    rest = [Sender(writer, domain, f"user{i}@example.org") for i in range(4)]
    wait_until(lambda: writer.waiting == 4)
    gate.open()
    for sender in [first, *rest]:
        sender.join()
    assert first.results and not first.errors
    failures = [s.errors[0] for s in rest]
    assert all(isinstance(e, OperationalError) for e in failures)
    assert len({id(e) for e in failures}) == 4  # each request raises its own object
    assert not any(s.results for s in rest)
    # The database being away is not worth a retry per message: one attempt in all.
    assert gate.sizes == [1, 4]
    assert count(db, messages) == 1 and count(db, deliveries) == 1
    assert count(db, events) == 1
    # The writer is not stuck: the next message is stored at once.
    gate.fail = lambda batch: None
    accept(writer, domain, submission("later@example.org"))
    assert count(db, messages) == 2


def test_a_bad_message_does_not_sink_its_batch(db: Database, domain: Domain,
                                               writer: IntakeWriter,
                                               gate: Gate) -> None:
    # A domain that is gone by the time its message is stored (a foreign key fails).
    ghost = dataclasses.replace(domain, name="ghost.example")
    first = Sender(writer, domain, "first@example.org")
    assert gate.entered.wait(10)
    good = Sender(writer, domain, "good1@example.org")
    wait_until(lambda: writer.waiting == 1)
    bad = Sender(writer, ghost, "bad@example.org")
    wait_until(lambda: writer.waiting == 2)
    also_good = Sender(writer, domain, "good2@example.org")
    wait_until(lambda: writer.waiting == 3)
    gate.open()
    for sender in (first, good, bad, also_good):
        sender.join()
    assert isinstance(bad.errors[0], IntegrityError) and not bad.results
    assert all(s.results and not s.errors for s in (first, good, also_good))
    assert gate.sizes == [1, 3, 1, 1, 1]  # the batch failed; each was tried alone
    with db.read() as conn:
        recipients = set(conn.execute(sa.select(deliveries.c.recipient)).scalars())
        accepted = set(conn.execute(sa.select(events.c.recipient)
                                    .where(events.c.event == "accepted")).scalars())
    assert recipients == accepted == {"first@example.org", "good1@example.org",
                                      "good2@example.org"}


class Interrupted(BaseException):
    pass


def test_an_interrupted_waiter_leaves_no_one_stuck(db: Database, domain: Domain,
                                                   writer: IntakeWriter, gate: Gate,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A request made leader of the next batch but interrupted before it starts (only a
    main thread can be) passes the lead on instead of leaving the queue stalled."""

    class WakesInterrupted(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            super().wait(timeout)
            raise Interrupted

    class Ticket(intake._Ticket):
        def __init__(self, item: Intake) -> None:
            super().__init__(item)
            if item.deliveries[0]["recipient"] == "interrupted@example.org":
                self.wake = WakesInterrupted()

    monkeypatch.setattr(intake, "_Ticket", Ticket)
    first = Sender(writer, domain, "first@example.org")
    assert gate.entered.wait(10)
    interrupted = Sender(writer, domain, "interrupted@example.org")
    wait_until(lambda: writer.waiting == 1)
    after = Sender(writer, domain, "after@example.org")
    wait_until(lambda: writer.waiting == 2)
    gate.open()
    for sender in (first, interrupted, after):
        sender.join()
    assert isinstance(interrupted.errors[0], Interrupted)
    assert first.results and after.results
    with db.read() as conn:
        assert set(conn.execute(sa.select(deliveries.c.recipient)).scalars()) == {
            "first@example.org", "after@example.org"}


def _form(i: int) -> dict[str, str]:
    return {"from": "shop@example.com", "to": f"user{i}@example.org", "subject": f"m{i}",
            "text": "Hello"}


async def test_concurrent_api_sends_are_each_queued_once(service: Service,
                                                         smtp_relay: SmtpRelay,
                                                         gate: Gate) -> None:
    writer = service.runtime.intake

    async def send(i: int) -> httpx.Response:
        return await service.client.post("/v3/example.com/messages", data=_form(i))

    first = asyncio.create_task(send(0))
    assert await asyncio.to_thread(gate.entered.wait, 10)
    rest = [asyncio.create_task(send(i)) for i in range(1, 20)]
    await asyncio.to_thread(wait_until, lambda: writer.waiting == 19)
    assert not any(t.done() for t in [first, *rest])
    gate.open()
    answers = await asyncio.gather(first, *rest)
    assert [r.status_code for r in answers] == [200] * 20
    assert {r.json()["message"] for r in answers} == {"Queued. Thank you."}
    assert len({r.json()["id"] for r in answers}) == 20
    assert gate.sizes == [1, 19]
    received = await smtp_relay.wait_for(20)
    assert sorted(r.recipients[0] for r in received) == sorted(
        f"user{i}@example.org" for i in range(20))
    accepted = await service.wait_events(20, event="accepted")
    assert sorted(e["message"]["headers"]["message-id"] for e in accepted) == sorted(
        r.json()["id"].strip("<>") for r in answers)


async def test_a_failed_batch_is_an_error_to_each_client(service: Service,
                                                         gate: Gate) -> None:
    """Over a real socket: the requests of a batch whose commit failed get a 500, never
    "Queued"; the next request is queued as usual."""
    gate.fail = lambda batch: (OperationalError("INSERT", {}, Exception("database is away"))
                               if len(batch) > 1 else None)
    writer = service.runtime.intake
    await service.start_http()

    async def send(i: int) -> httpx.Response:
        return await service.web.post("/v3/example.com/messages", data=_form(i),
                                      auth=("api", API_KEY))

    first = asyncio.create_task(send(0))
    assert await asyncio.to_thread(gate.entered.wait, 10)
    rest = [asyncio.create_task(send(i)) for i in range(1, 6)]
    await asyncio.to_thread(wait_until, lambda: writer.waiting == 5)
    gate.open()
    answers = await asyncio.gather(first, *rest)
    assert answers[0].status_code == 200
    assert answers[0].json()["message"] == "Queued. Thank you."
    assert [r.status_code for r in answers[1:]] == [500] * 5
    assert all("Queued" not in r.text for r in answers[1:])
    gate.fail = lambda batch: None
    later = await send(99)
    assert later.status_code == 200
    assert count(service.runtime.db, messages) == 2


# --- the worker: one suppression query per claimed batch, outcomes recorded together -----


def test_blocks_each_says_what_blocks_says(db: Database) -> None:
    dom.add_domain(db, "example.com")
    dom.add_domain(db, "other.example")
    now = now_us()
    K = SuppressionKind
    with db.write() as conn:
        for domain, kind, address, tag in [
            ("example.com", K.BOUNCE, "bounced@example.org", ""),
            ("example.com", K.COMPLAINT, "complained@partner.example", ""),
            ("example.com", K.UNSUBSCRIBE, "all@example.org", "*"),
            ("example.com", K.UNSUBSCRIBE, "promo@example.org", "promo"),
            ("example.com", K.UNSUBSCRIBE, "news@example.org", "list:news.example.com"),
            ("example.com", K.BOUNCE, "kept@example.org", ""),
            ("example.com", K.ALLOWLIST, "kept@example.org", ""),
            ("example.com", K.ALLOWLIST, "partner.example", ""),
            ("example.com", K.UNSUBSCRIBE, "kept@example.org", "*"),
            ("other.example", K.BOUNCE, "all@example.org", ""),
            ("other.example", K.BOUNCE, "bounced@example.org", ""),
        ]:
            suppressions.add(conn, domain, kind, address, now, tag=tag, code="550",
                             error=f"{kind} {address}")
    addresses = ["Bounced@Example.org", "complained@partner.example", "all@example.org",
                 "promo@example.org", "news@example.org", "kept@example.org",
                 "fine@example.org", "other@partner.example"]
    checks: list[suppressions.Check] = [
        (domain, address, tags, list_id)
        for domain in ("example.com", "other.example", "third.example")
        for address in addresses
        for tags, list_id in (([], None), (["promo"], None), ([], "news.example.com"))
    ]
    with db.read() as conn:
        expected = [suppressions.blocks(conn, d, [a], t, lid).get(a.lower())
                    for d, a, t, lid in checks]
        found = suppressions.blocks_each(conn, checks)
    assert found == expected
    assert sum(b is not None for b in found) >= 10  # the table above does block some


@pytest.fixture
async def manual(service_factory: Any, smtp_relay: SmtpRelay) -> Any:
    """A service whose worker the test drives."""
    async with service_factory(relay=smtp_relay.url, run_worker=False) as svc:
        await svc.add_domain("example.com")
        yield svc


async def test_one_suppression_query_per_claimed_batch(manual: Service,
                                                       smtp_relay: SmtpRelay) -> None:
    db = manual.runtime.db
    with db.write() as conn:
        suppressions.add(conn, "example.com", SuppressionKind.BOUNCE, "user3@example.org",
                         now_us())
        suppressions.add(conn, "example.com", SuppressionKind.UNSUBSCRIBE,
                         "user5@example.org", now_us(), tag="*")
    for i in range(8):
        await manual.send(to=f"user{i}@example.org", subject="x", text="y")
    worker = DeliveryWorker(db, Relay.from_url(smtp_relay.url), manual.runtime.codec,
                            "http://x", clock=lambda: now_us() + 1_000_000)
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", seen)
    try:
        jobs = await asyncio.to_thread(worker._claim, 40)
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", seen)
    assert len(jobs) == 8
    assert sum("FROM suppressions" in s for s in statements) == 1
    blocked = {j.recipient: j.block.reason for j in jobs if j.block is not None}
    assert blocked == {"user3@example.org": "suppress-bounce",
                       "user5@example.org": "suppress-unsubscribe"}


async def test_outcomes_of_a_batch_are_recorded_only_where_the_lease_is_ours(
        manual: Service, smtp_relay: SmtpRelay) -> None:
    db = manual.runtime.db
    for name in ("kept", "retried", "taken"):
        await manual.send(to=f"{name}@example.org", subject="x", text="y")
    worker = DeliveryWorker(db, Relay.from_url(smtp_relay.url), manual.runtime.codec,
                            "http://x", clock=lambda: now_us() + 1_000_000)
    jobs = {j.recipient: j for j in await asyncio.to_thread(worker._claim, 40)}
    assert len(jobs) == 3
    with db.write() as conn:  # another worker took this one over (its lease expired)
        conn.execute(deliveries.update().where(deliveries.c.id == jobs["taken@example.org"]
                                               .delivery_id)
                     .values(attempts=deliveries.c.attempts + 1))
    outcomes = {"kept@example.org": Outcome(250, "OK"),
                "retried@example.org": Outcome(451, "Try later"),
                "taken@example.org": Outcome(250, "OK")}
    await asyncio.to_thread(worker._record, [(job, outcomes[rcpt], 0.01)
                                             for rcpt, job in jobs.items()])
    with db.read() as conn:
        rows = {r.recipient: r for r in conn.execute(sa.select(deliveries))}
        recorded = conn.execute(sa.select(events.c.recipient, events.c.event)
                                .where(events.c.event != "accepted")).all()
    assert sorted(recorded) == [("kept@example.org", "delivered"),
                                ("retried@example.org", "failed")]
    assert rows["kept@example.org"].status == "delivered"
    assert rows["kept@example.org"].last_code == 250
    assert rows["retried@example.org"].status == "queued"
    assert rows["retried@example.org"].next_attempt_at > now_us() + 5 * 60 * 1_000_000
    assert rows["taken@example.org"].status == "sending"  # left to its new owner
    assert rows["taken@example.org"].attempts == 2
    assert rows["taken@example.org"].last_code is None

"""The Contacts API on both backends: listing by engagement, filters and paging, details,
consent, timelines, erasure, per-recipient status, and domain privacy settings.

Most tests seed rows directly; the ones named `test_end_to_end_*` send real mail through
the service and follow its tracking links.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from email.utils import formatdate
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import func, select

from mailbeacon.domains import domain as dom
from mailbeacon.insight import engagement
from mailbeacon.model.clock import now_us
from mailbeacon.model.ids import new_id
from mailbeacon.storage.db import Database, insert_events
from mailbeacon.storage.schema import (
    contacts,
    deliveries,
    domains,
    events,
    link_clicks,
    messages,
    recipient_state,
    stats_buckets,
    suppressions,
    webhook_deliveries,
)
from tests.support import Service, SmtpRelay

BROWSER = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/124.0 Safari/537.36")

DAY = 86_400 * 1_000_000
DOMAIN = "example.com"
BASE = f"/v3/{DOMAIN}"


@pytest.fixture
def client(service: Service) -> httpx.AsyncClient:
    """The service's authenticated API client."""
    return service.client  # type: ignore[no-any-return]


# --- seeding ---------------------------------------------------------------------------


def db_of(service: Service) -> Database:
    db = service.runtime.db
    assert isinstance(db, Database)
    return db


def add_contact(db: Database, address: str, score: float = 0.0, score_at: int = 0,
                opens: int = 0, clicks: int = 0, replies: int = 0,
                last_activity_at: int | None = None, consent: bool | None = None,
                domain: str = DOMAIN) -> None:
    with db.write() as conn:
        conn.execute(contacts.insert().values(
            domain=domain, address=address, score=score, score_at=score_at,
            score_rank=engagement.rank(score, score_at), opens=opens, clicks=clicks,
            replies=replies, last_activity_at=last_activity_at, consent=consent,
            consent_at=None if consent is None else score_at, created_at=score_at))


def add_message(db: Database, recipients: Sequence[str], *, status: str = "delivered",
                code: int | None = 250, created_at: int | None = None,
                message_id: str | None = None, subject: str = "Hello",
                tags: Sequence[str] = ()) -> tuple[str, list[str]]:
    """A message and one delivery per recipient; its Message-ID and delivery ids."""
    created_at = now_us() if created_at is None else created_at
    row_id = new_id(created_at)
    message_id = message_id or f"{row_id}@{DOMAIN}"
    ids = [new_id(created_at + i) for i in range(len(recipients))]
    with db.write() as conn:
        conn.execute(messages.insert().values(
            id=row_id, domain=DOMAIN, message_id=message_id, created_at=created_at,
            sender=f"sender@{DOMAIN}",
            headers=json.dumps({"message-id": message_id, "subject": subject,
                                "to": ", ".join(recipients), "from": f"sender@{DOMAIN}"}),
            tags=json.dumps(list(tags)), user_variables="{}", options="{}", mime=b"x"))
        # Queued rows are due in a year, so the running worker leaves them alone.
        conn.execute(deliveries.insert(), [
            {"id": i, "message_id": row_id, "recipient": r, "status": status,
             "attempts": 0 if status == "queued" else 1, "last_code": code,
             "next_attempt_at": created_at + 365 * DAY, "updated_at": created_at}
            for i, r in zip(ids, recipients, strict=True)])
    return message_id, ids


def add_state(db: Database, delivery_id: str, recipient: str | None, opens: int = 0,
              clicks: int = 0, at: int = 0, bounced: bool = False) -> None:
    with db.write() as conn:
        conn.execute(recipient_state.insert().values(
            delivery_id=delivery_id, domain=DOMAIN, recipient=recipient, open_count=opens,
            click_count=clicks, human_open_count=opens, human_click_count=clicks,
            first_open_at=at if opens else None, last_open_at=at + 1 if opens else None,
            first_click_at=at if clicks else None, last_click_at=at if clicks else None,
            first_human_open_at=at if opens else None,
            first_human_click_at=at if clicks else None, bounced=bounced))


def add_events(db: Database, recipient: str, count: int, *, delivery_id: str | None = None,
               message_id: str = f"m@{DOMAIN}", ts: int | None = None,
               event: str = "opened", domain: str = DOMAIN) -> list[str]:
    ts = now_us() if ts is None else ts
    rows = [{"domain": domain, "ts": ts + i, "event": event, "recipient": recipient,
             "message_id": message_id, "delivery_id": delivery_id, "severity": None,
             "tags": "", "data": {"event": event, "timestamp": (ts + i) / 1e6,
                                  "recipient": recipient}}
            for i in range(count)]
    with db.write() as conn:
        return insert_events(conn, rows)


def date(us: int | None) -> str | None:
    return None if us is None else formatdate(us / 1_000_000, usegmt=True)


async def walk(client: httpx.AsyncClient, url: str, direction: str = "next",
               field: str = "address") -> list[list[Any]]:
    """Follow `direction` paging URLs until an empty page; the items' `field`, by page."""
    pages: list[list[Any]] = []
    for _ in range(100):
        r = await client.get(url)
        assert r.status_code == 200, r.text
        body = r.json()
        if not body["items"]:
            return pages
        pages.append([item[field] for item in body["items"]])
        url = body["paging"][direction]
    raise AssertionError("paging did not end")


def flat(pages: list[list[Any]]) -> list[Any]:
    return [x for page in pages for x in page]


# --- listing ---------------------------------------------------------------------------


async def test_list_by_engagement_is_the_current_score_order(
        service: Service, client: httpx.AsyncClient) -> None:
    db, now = db_of(service), now_us()
    # Stored at different moments: a big old score can be worth less than a small new one.
    seeded = {
        "a@x.org": (8.0, now - 90 * DAY),  # 1.0 now
        "b@x.org": (2.0, now - 1 * DAY),
        "c@x.org": (4.0, now - 30 * DAY),  # 2.0 now, just above b (1.95)
        "d@x.org": (0.5, now),
        "e@x.org": (3.0, now - 10 * DAY),
        "f@x.org": (3.0, now - 10 * DAY),  # the same rank as e: address breaks the tie
        "g@x.org": (0.0, 0),
        "h@x.org": (0.0, 0),
        "i@x.org": (100.0, now - 365 * DAY),
    }
    for address, (score, at) in seeded.items():
        add_contact(db, address, score, at, opens=int(score), last_activity_at=at or None)
    current = {a: engagement.score_now(s, at, now) for a, (s, at) in seeded.items()}
    expected = sorted(seeded, key=lambda a: (current[a], a), reverse=True)
    assert expected == ["f@x.org", "e@x.org", "c@x.org", "b@x.org", "a@x.org", "d@x.org",
                        "i@x.org", "h@x.org", "g@x.org"]

    r = await client.get(f"{BASE}/contacts")
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [i["address"] for i in items] == expected
    by_address = {i["address"]: i for i in items}
    assert by_address["c@x.org"]["score"] == pytest.approx(2.0, abs=0.001)
    assert by_address["c@x.org"]["score"] == round(by_address["c@x.org"]["score"], 3)
    assert by_address["g@x.org"]["score"] == 0
    assert by_address["b@x.org"] == {
        "address": "b@x.org", "score": round(current["b@x.org"], 3), "opens": 2,
        "clicks": 0, "replies": 0, "last_activity_at": date(now - DAY), "consent": None}
    assert by_address["g@x.org"]["last_activity_at"] is None

    # Forward in pages of 2, backward from the last page, and the other order.
    pages = await walk(client, f"{BASE}/contacts?limit=2")
    assert [len(p) for p in pages] == [2, 2, 2, 2, 1]
    assert flat(pages) == expected
    back = await walk(client, f"{BASE}/contacts?limit=2&page=last", "previous")
    assert flat([p[::-1] for p in back]) == expected[::-1]
    ascending = await walk(client, f"{BASE}/contacts?limit=3&order=asc")
    assert flat(ascending) == expected[::-1]


async def test_paging_survives_score_changes_between_pages(
        service: Service, client: httpx.AsyncClient) -> None:
    db, now = db_of(service), now_us()
    for n in range(6):
        add_contact(db, f"p{n}@x.org", float(10 - n), now)
    first = (await client.get(f"{BASE}/contacts?limit=3")).json()
    assert [i["address"] for i in first["items"]] == ["p0@x.org", "p1@x.org", "p2@x.org"]
    # p1 becomes the most engaged contact: the next page still starts after p2's key.
    with db.write() as conn:
        conn.execute(contacts.update().where(contacts.c.address == "p1@x.org").values(
            score=50.0, score_rank=engagement.rank(50.0, now)))
    rest = await walk(client, first["paging"]["next"])
    assert flat(rest) == ["p3@x.org", "p4@x.org", "p5@x.org"]


async def test_sort_by_address_and_last_activity(service: Service,
                                                 client: httpx.AsyncClient) -> None:
    db, now = db_of(service), now_us()
    activity = {"b@x.org": now - 5 * DAY, "a@x.org": now - DAY, "d@x.org": None,
                "c@x.org": now - 3 * DAY, "e@x.org": now - 3 * DAY}
    for address, at in activity.items():
        add_contact(db, address, 1.0, now, last_activity_at=at)
    add_contact(db, "z@x.org", domain="other.example.com")  # another domain's contact
    pages = await walk(client, f"{BASE}/contacts?sort=address&limit=2")
    assert flat(pages) == ["a@x.org", "b@x.org", "c@x.org", "d@x.org", "e@x.org"]
    pages = await walk(client, f"{BASE}/contacts?sort=address&order=desc&limit=4")
    assert flat(pages) == ["e@x.org", "d@x.org", "c@x.org", "b@x.org", "a@x.org"]
    # Most recent first; ties by address (descending too); never-active contacts last.
    pages = await walk(client, f"{BASE}/contacts?sort=last_activity&limit=2")
    assert flat(pages) == ["a@x.org", "e@x.org", "c@x.org", "b@x.org", "d@x.org"]
    pages = await walk(client, f"{BASE}/contacts?sort=last_activity&order=asc&limit=2")
    assert flat(pages) == ["d@x.org", "b@x.org", "c@x.org", "e@x.org", "a@x.org"]
    back = await walk(client, f"{BASE}/contacts?sort=last_activity&page=last&limit=2",
                      "previous")
    assert flat([p[::-1] for p in back]) == ["d@x.org", "b@x.org", "c@x.org", "e@x.org",
                                             "a@x.org"]
    # A pivot is tied to its sort: it cannot be replayed against another one.
    first = (await client.get(f"{BASE}/contacts?sort=address&limit=2")).json()
    token = re.search(r"pivot=([^&]+)", first["paging"]["next"])
    assert token is not None
    r = await client.get(f"{BASE}/contacts?sort=engagement&page=next&pivot={token.group(1)}")
    assert r.status_code == 400


async def test_score_filters_match_the_python_score(service: Service,
                                                    client: httpx.AsyncClient) -> None:
    db, now = db_of(service), now_us()
    rng = random.Random(7)
    current: dict[str, float] = {}
    for n in range(60):
        address = f"r{n:02}@x.org"
        score = 0.0 if n % 10 == 0 else rng.uniform(0.1, 40.0)
        at = now - int(rng.uniform(0, 200) * DAY) if score else 0
        add_contact(db, address, score, at)
        current[address] = engagement.score_now(score, at, now)

    async def matching(**params: Any) -> set[str]:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        pages = await walk(client, f"{BASE}/contacts?limit=7&{query}")
        return set(flat(pages))

    for low, high in ((1.0, None), (None, 2.5), (0.5, 5.0), (3.0, 3.5), (100.0, None)):
        # Contacts right at a bound could go either way with a millisecond of decay.
        near = {a for a, s in current.items()
                if any(b is not None and abs(s - b) < 1e-6 for b in (low, high))}
        params = {k: v for k, v in (("min_score", low), ("max_score", high)) if v is not None}
        expected = {a for a, s in current.items()
                    if (low is None or s >= low) and (high is None or s <= high)}
        assert await matching(**params) - near == expected - near, params
    assert await matching(min_score=0) == set(current)
    assert await matching(max_score=0) == {a for a, s in current.items() if s == 0}
    # The filtered list is still in score order.
    r = await client.get(f"{BASE}/contacts?min_score=1&limit=1000")
    scores = [i["score"] for i in r.json()["items"]]
    assert scores == sorted(scores, reverse=True) and min(scores) >= 1


async def test_activity_and_consent_filters(service: Service,
                                            client: httpx.AsyncClient) -> None:
    db, now = db_of(service), now_us()
    add_contact(db, "yes@x.org", 1.0, now, last_activity_at=now - 2 * DAY, consent=True)
    add_contact(db, "no@x.org", 1.0, now, last_activity_at=now - 20 * DAY, consent=False)
    add_contact(db, "unknown@x.org", 1.0, now)

    async def addresses(query: str) -> list[str]:
        r = await client.get(f"{BASE}/contacts?sort=address&{query}")
        assert r.status_code == 200, r.text
        return [i["address"] for i in r.json()["items"]]

    assert await addresses("consent=yes") == ["yes@x.org"]
    assert await addresses("consent=no") == ["no@x.org"]
    assert await addresses("consent=unknown") == ["unknown@x.org"]
    since = (now - 5 * DAY) // 1_000_000
    assert await addresses(f"active_since={since}") == ["yes@x.org"]
    assert await addresses("active_since=" + quote(date(now - 30 * DAY) or "")) == [
        "no@x.org", "yes@x.org"]
    assert await addresses(f"active_since={since}&consent=no") == []


@pytest.mark.parametrize("query", [
    "sort=score", "order=up", "limit=0", "limit=1001", "min_score=abc", "min_score=nan",
    "min_score=-1", "max_score=1e3", "min_score=5&max_score=1", "consent=maybe",
    "active_since=yesterday", "page=next", "page=sideways", "page=next&pivot=%%%",
    "page=prev&pivot=WyJlbmdhZ2VtZW50Iix0cnVlLCJhIl0",  # ["engagement",true,"a"]
])
async def test_list_rejects_bad_parameters(service: Service, client: httpx.AsyncClient,
                                           query: str) -> None:
    r = await client.get(f"{BASE}/contacts?{query}")
    assert r.status_code == 400, r.text
    assert r.json()["message"]


async def test_unknown_domain_is_404(service: Service, client: httpx.AsyncClient) -> None:
    for path in ("contacts", "contacts/a@x.org", "contacts/a@x.org/timeline",
                 "messages/m@x/recipients", "recipients/a@x.org/messages"):
        r = await client.get(f"/v3/nowhere.example/{path}")
        assert r.status_code == 404, path
    assert (await client.get("/v3/domains/nowhere.example/privacy")).status_code == 404


# --- one contact -----------------------------------------------------------------------


async def test_contact_details_with_suppressions_and_counts(
        service: Service, client: httpx.AsyncClient) -> None:
    db, now = db_of(service), now_us()
    add_contact(db, "alice@x.org", 3.0, now - 30 * DAY, opens=2, clicks=1,
                last_activity_at=now - 30 * DAY, consent=True)
    _, (d1,) = add_message(db, ["Alice@x.org"])
    _, (d2,) = add_message(db, ["alice@x.org"], status="failed", code=550)
    add_message(db, ["bob@x.org"])
    add_state(db, d1, "alice@x.org", opens=2, clicks=1, at=now)
    add_events(db, "alice@x.org", 4)
    add_events(db, "bob@x.org", 2)
    with db.write() as conn:
        # Every row names every column: an executemany takes its columns from the first.
        conn.execute(suppressions.insert(), [
            {"domain": DOMAIN, "kind": kind, "address": address, "tag": tag, "code": code,
             "error": error, "created_at": now}
            for kind, address, tag, code, error in [
                ("unsubscribe", "alice@x.org", "*", "", ""),
                ("unsubscribe", "alice@x.org", "news", "", ""),
                ("bounce", "alice@x.org", "", "550", "No such user"),
                ("allowlist", "x.org", "", "", ""),
                ("bounce", "bob@x.org", "", "", "")]])
    r = await client.get(f"{BASE}/contacts/ALICE@x.org")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["address"] == "alice@x.org"
    assert body["score"] == pytest.approx(1.5, abs=0.001)  # one half-life later
    assert body["consent"] is True and body["consent_at"] == date(now - 30 * DAY)
    assert (body["opens"], body["clicks"], body["replies"]) == (2, 1, 0)
    assert body["counts"] == {"messages": 2, "delivered": 1, "failed": 1, "opened": 1,
                              "clicked": 1, "events": 4}
    kinds = {(s["kind"], s["value"], s["scope"]) for s in body["suppressions"]}
    assert kinds == {("unsubscribe", "alice@x.org", "*"),
                     ("unsubscribe", "alice@x.org", "news"),
                     ("bounce", "alice@x.org", None), ("allowlist", "x.org", None)}
    bounce = next(s for s in body["suppressions"] if s["kind"] == "bounce")
    assert (bounce["code"], bounce["error"], bounce["created_at"]) == (
        "550", "No such user", date(now))

    r = await client.get(f"{BASE}/contacts/nobody@x.org")
    assert (r.status_code, r.json()) == (404, {"message": "Contact not found"})
    assert (await client.get(f"{BASE}/contacts/not-an-address")).status_code == 404
    assert d2  # the failed delivery is counted above


async def test_consent_set_and_unset(service: Service, client: httpx.AsyncClient) -> None:
    db = db_of(service)
    r = await client.put(f"{BASE}/contacts/New@X.org/consent", data={"consent": "yes"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["message"], body["address"], body["consent"]) == (
        "Consent updated", "new@x.org", True)
    assert body["consent_at"] is not None
    assert (await client.get(f"{BASE}/contacts/new@x.org")).json()["consent"] is True

    # An existing contact keeps its score: only consent changes.
    now = now_us()
    add_contact(db, "scored@x.org", 5.0, now, opens=5)
    r = await client.put(f"{BASE}/contacts/scored@x.org/consent", data={"consent": "NO"})
    assert r.json()["consent"] is False
    got = (await client.get(f"{BASE}/contacts/scored@x.org")).json()
    assert (got["consent"], got["opens"], got["score"]) == (False, 5, pytest.approx(5.0, 1e-3))
    r = await client.put(f"{BASE}/contacts/scored@x.org/consent", data={"consent": "unknown"})
    assert (r.json()["consent"], r.json()["consent_at"]) == (None, None)
    r = await client.get(f"{BASE}/contacts?consent=unknown&sort=address")
    assert [i["address"] for i in r.json()["items"]] == ["scored@x.org"]

    for data in ({}, {"consent": ""}, {"consent": "maybe"}):
        r = await client.put(f"{BASE}/contacts/new@x.org/consent", data=data)
        assert r.status_code == 400, data
    r = await client.put(f"{BASE}/contacts/not-an-address/consent", data={"consent": "yes"})
    assert r.status_code == 400
    r = await client.put("/v3/nowhere.example/contacts/a@x.org/consent",
                         data={"consent": "yes"})
    assert r.status_code == 404


async def test_timeline_is_newest_first_with_paging(service: Service,
                                                    client: httpx.AsyncClient) -> None:
    db = db_of(service)
    alice = add_events(db, "alice@x.org", 7)
    add_events(db, "bob@x.org", 3)
    alice += add_events(db, "alice@x.org", 1, event="clicked")
    add_events(db, "alice@x.org", 2, domain="other.example.com")
    r = await client.get(f"{BASE}/contacts/Alice@X.org/timeline?limit=3")
    assert r.status_code == 200, r.text
    body = r.json()
    assert [i["id"] for i in body["items"]] == alice[::-1][:3]
    assert body["items"][0]["event"] == "clicked"
    assert set(body["paging"]) == {"first", "last", "next", "previous"}
    pages = await walk(client, body["paging"]["next"], field="id")
    assert flat(pages) == alice[::-1][3:]
    back = await walk(client, body["paging"]["last"], "previous", field="id")
    assert flat(back[::-1]) == alice[::-1]
    empty = await client.get(f"{BASE}/contacts/nobody@x.org/timeline")
    assert empty.json()["items"] == []
    assert (await client.get(f"{BASE}/contacts/a@x.org/timeline?limit=301")).status_code \
        == 400
    assert (await client.get(f"{BASE}/contacts/a@x.org/timeline?page=junk")).status_code \
        == 400


# --- erasure ---------------------------------------------------------------------------


async def test_erasure_removes_the_person_but_keeps_stats_and_suppressions(
        service: Service, client: httpx.AsyncClient) -> None:
    db, now = db_of(service), now_us()
    add_contact(db, "alice@x.org", 2.0, now, opens=2)
    add_contact(db, "bob@x.org", 1.0, now, opens=1)
    alone, (d_alone,) = add_message(db, ["Alice@x.org"])
    shared, (d_shared, d_bob) = add_message(db, ["alice@x.org", "bob@x.org"])
    add_state(db, d_alone, "alice@x.org", opens=2, clicks=1, at=now)
    add_state(db, d_shared, None, opens=1, at=now)  # an anonymised hit: no address
    add_state(db, d_bob, "bob@x.org", opens=1, at=now)
    alice_events = add_events(db, "alice@x.org", 3, delivery_id=d_alone, message_id=alone)
    # An event found by its delivery even though its recipient field says otherwise.
    alice_events += add_events(db, "ALICE-typo@x.org", 1, delivery_id=d_shared)
    bob_events = add_events(db, "bob@x.org", 2, delivery_id=d_bob, message_id=shared)
    stats = [{"domain": DOMAIN, "tag": "", "event": e, "hour": 3600 * h, "count": 5,
              "human_count": 1} for e in ("opened", "clicked") for h in range(3)]
    with db.write() as conn:
        conn.execute(link_clicks.insert(), [
            {"delivery_id": d_alone, "link_index": 0, "count": 1},
            {"delivery_id": d_bob, "link_index": 0, "count": 2}])
        conn.execute(stats_buckets.insert(), stats)
        conn.execute(suppressions.insert(), [
            {"domain": DOMAIN, "kind": "unsubscribe", "address": "alice@x.org", "tag": "*",
             "created_at": now}])
        conn.execute(webhook_deliveries.insert(), [
            {"id": new_id(), "domain": DOMAIN, "webhook": "opened", "url": "https://h/",
             "event_id": e, "payload": {}, "status": "done", "next_attempt_at": now,
             "created_at": now} for e in (alice_events[0], bob_events[0])])

    r = await client.delete(f"{BASE}/contacts/ALICE@x.org")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["message"].startswith("Contact erased")
    assert "suppressions are kept" in body["message"]
    assert (body["events_deleted"], body["deliveries_deleted"], body["messages_deleted"],
            body["suppressions_kept"]) == (4, 2, 1, 1)

    with db.read() as conn:
        def column(col: Any) -> set[Any]:
            return set(conn.execute(select(col)).scalars())

        assert column(events.c.id) == set(bob_events)
        assert column(recipient_state.c.delivery_id) == {d_bob}
        assert column(link_clicks.c.delivery_id) == {d_bob}
        assert column(contacts.c.address) == {"bob@x.org"}
        assert column(deliveries.c.id) == {d_bob}
        assert column(messages.c.message_id) == {shared}  # bob's message stays
        assert column(webhook_deliveries.c.event_id) == {bob_events[0]}
        assert column(suppressions.c.address) == {"alice@x.org"}
        left = [dict(r._mapping) for r in conn.execute(
            select(stats_buckets).order_by(stats_buckets.c.event, stats_buckets.c.hour))]
    assert left == sorted(stats, key=lambda s: (s["event"], s["hour"]))
    assert await service.events(recipient="alice@x.org") == []
    assert (await client.get(f"{BASE}/contacts/alice@x.org")).status_code == 404
    timeline = await client.get(f"{BASE}/contacts/alice@x.org/timeline")
    assert timeline.json()["items"] == []
    r = await client.get(f"{BASE}/messages/{alone}/recipients")
    assert r.status_code == 404
    r = await client.get(f"{BASE}/messages/{shared}/recipients")
    assert [i["recipient"] for i in r.json()["items"]] == ["bob@x.org"]

    # Nothing left to erase: 404, and nothing else changes.
    r = await client.delete(f"{BASE}/contacts/alice@x.org")
    assert (r.status_code, r.json()) == (404, {"message": "Contact not found"})
    assert (await client.delete(f"{BASE}/contacts/nobody@x.org")).status_code == 404


async def test_erasure_of_events_without_a_contact_row(service: Service,
                                                       client: httpx.AsyncClient) -> None:
    db = db_of(service)
    add_events(db, "carol@x.org", 2)
    r = await client.delete(f"{BASE}/contacts/carol@x.org")
    assert (r.status_code, r.json()["events_deleted"]) == (200, 2)
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(events)).scalar_one() == 0


# --- per-recipient status --------------------------------------------------------------


async def test_message_recipients_status_and_indicators(service: Service,
                                                        client: httpx.AsyncClient) -> None:
    db, now = db_of(service), now_us()
    names = ["gray@x.org", "green@x.org", "blue@x.org", "late-bounce@x.org"]
    message_id, ids = add_message(db, names, tags=["promo"], subject="Sale")
    add_state(db, ids[1], "green@x.org", opens=3, at=now)
    add_state(db, ids[2], "blue@x.org", opens=1, clicks=2, at=now)
    add_state(db, ids[3], "late-bounce@x.org", opens=0, bounced=True)
    later = now_us()  # ids after add_message's, however long it took (the list's order)
    with db.write() as conn:
        # Same Message-ID, other rows: a failed one (5xx: bounced), a suppressed one (605),
        # a queued one.
        conn.execute(deliveries.insert(), [
            {"id": new_id(later + 10 + n), "message_id": conn.execute(
                select(messages.c.id).where(messages.c.message_id == message_id)
            ).scalar_one(), "recipient": r, "status": s, "attempts": a, "last_code": c,
             "last_message": m, "next_attempt_at": now + 365 * DAY, "updated_at": now}
            for n, (r, s, a, c, m) in enumerate([
                ("hard@x.org", "failed", 1, 550, "No such user"),
                ("suppressed@x.org", "failed", 1, 605, "suppress-unsubscribe"),
                ("waiting@x.org", "queued", 0, None, None)])])

    r = await client.get(f"{BASE}/messages/<{message_id}>/recipients")
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    got = {i["recipient"]: (i["status"], i["indicator"]) for i in items}
    assert got == {
        "gray@x.org": ("delivered", "gray"), "green@x.org": ("opened", "green"),
        "blue@x.org": ("clicked", "blue"), "late-bounce@x.org": ("bounced", "red"),
        "hard@x.org": ("bounced", "red"), "suppressed@x.org": ("failed", "red"),
        "waiting@x.org": ("queued", "gray")}
    assert [i["recipient"] for i in items] == [*names, "hard@x.org", "suppressed@x.org",
                                               "waiting@x.org"]
    green = items[1]
    assert green == {
        "recipient": "green@x.org", "status": "opened", "indicator": "green", "opens": 3,
        "clicks": 0, "human_opens": 3, "human_clicks": 0, "first_opened_at": date(now),
        "last_opened_at": date(now + 1), "first_clicked_at": None, "last_clicked_at": None,
        "delivery": {"status": "delivered", "attempts": 1, "code": 250, "message": None,
                     "next_attempt_at": None}}
    assert items[4]["delivery"] == {"status": "failed", "attempts": 1, "code": 550,
                                    "message": "No such user", "next_attempt_at": None}
    assert items[0]["opens"] == 0 and items[0]["first_opened_at"] is None

    # Without brackets, and in pages.
    pages = await walk(client, f"{BASE}/messages/{message_id}/recipients?limit=3",
                       field="recipient")
    assert [len(p) for p in pages] == [3, 3, 1]
    assert flat(pages) == [i["recipient"] for i in items]
    r = await client.get(f"{BASE}/messages/nothing@x/recipients")
    assert (r.status_code, r.json()) == (404, {"message": "Message not found"})
    for query in ("limit=0", "page=next", "page=next&pivot=zzz", "page=last"):
        r = await client.get(f"{BASE}/messages/{message_id}/recipients?{query}")
        assert r.status_code == 400, query


async def test_recipient_messages_newest_first(service: Service,
                                               client: httpx.AsyncClient) -> None:
    db, now = db_of(service), now_us()
    sent = []
    for n in range(5):
        message_id, (delivery_id,) = add_message(db, ["Dana@x.org"], created_at=now + n,
                                                 subject=f"Issue {n}", tags=["news"])
        sent.append(message_id)
        if n == 3:
            add_state(db, delivery_id, "dana@x.org", opens=1, at=now)
    add_message(db, ["erin@x.org"], created_at=now + 10)
    r = await client.get(f"{BASE}/recipients/dana@x.org/messages")
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [i["message_id"] for i in items] == sent[::-1]
    assert items[1]["subject"] == "Issue 3" and items[1]["status"] == "opened"
    assert items[1]["tags"] == ["news"] and items[1]["sent_at"] == date(now + 3)
    assert items[0]["indicator"] == "gray" and items[0]["recipient"] == "Dana@x.org"
    pages = await walk(client, f"{BASE}/recipients/DANA@x.org/messages?limit=2",
                       field="message_id")
    assert flat(pages) == sent[::-1]
    r = await client.get(f"{BASE}/recipients/nobody@x.org/messages")
    assert r.json()["items"] == []


# --- privacy settings ------------------------------------------------------------------


async def test_privacy_settings(service: Service, client: httpx.AsyncClient) -> None:
    r = await client.get("/v3/domains/example.com/privacy")
    assert r.status_code == 200, r.text
    assert r.json() == {"privacy": {"track_activities": "always", "truncate_ips": False,
                                    "retention_days": 30}}
    r = await client.put("/v3/domains/example.com/privacy",
                         data={"track_activities": "Consent", "truncate_ips": "yes"})
    assert r.status_code == 200, r.text
    assert r.json() == {"message": "Domain privacy settings have been updated",
                        "privacy": {"track_activities": "consent", "truncate_ips": True,
                                    "retention_days": 30}}
    r = await client.put("/v3/domains/example.com/privacy", data={"retention_days": "3650"})
    assert r.json()["privacy"] == {"track_activities": "consent", "truncate_ips": True,
                                   "retention_days": 3650}
    with db_of(service).read() as conn:
        row = conn.execute(select(domains).where(domains.c.name == DOMAIN)).one()
    assert (row.track_activities, row.truncate_ips, row.retention_days) == (
        "consent", True, 3650)

    for data in ({}, {"track_activities": "sometimes"}, {"truncate_ips": "maybe"},
                 {"retention_days": "0"}, {"retention_days": "3651"},
                 {"retention_days": "-5"}, {"retention_days": "ten"},
                 {"retention_days": "99999999999999999999"}, {"retention_days": ""}):
        r = await client.put("/v3/domains/example.com/privacy", data=data)
        assert r.status_code == 400, data
        assert r.json()["message"]
    r = await client.put("/v3/domains/nowhere.example/privacy", data={"truncate_ips": "no"})
    assert r.status_code == 404
    # Nothing changed by the rejected requests.
    assert (await client.get("/v3/domains/example.com/privacy")).json()["privacy"][
        "retention_days"] == 3650


# --- end to end: real sends and hits ---------------------------------------------------

HTML = '<html><body><p>Hi</p><a href="https://shop.example.net/a">a</a></body></html>'


async def _send_and_track(service: Service, relay: SmtpRelay, to: str,
                          count: int = 1) -> tuple[str, str, str]:
    message_id = await service.send(to=to, subject="x", html=HTML)
    received = await relay.wait_for(count)
    await service.wait_events(count, event="delivered")
    html = received[-1].part("text/html")
    # The first tracked link is ours; compose.py may add a hidden honeypot link after it.
    link = re.findall(r'href="(http://[^"]+/c/[a-z0-9]+)"', html)[0]
    (pixel,) = re.findall(r'src="(http://[^"]+/o/[a-z0-9]+)"', html)
    return message_id.strip("<>"), link, pixel


async def test_end_to_end_status_follows_opens_and_clicks(
        service: Service, client: httpx.AsyncClient, smtp_relay: SmtpRelay) -> None:
    message_id, link, pixel = await _send_and_track(service, smtp_relay, "alice@example.org")
    url = f"{BASE}/messages/{message_id}/recipients"
    (item,) = (await client.get(url)).json()["items"]
    assert (item["status"], item["indicator"], item["opens"]) == ("delivered", "gray", 0)
    assert item["delivery"]["status"] == "delivered"
    for _ in range(2):
        assert (await service.hit(pixel, headers={"user-agent": "Thunderbird/115"})
                ).status_code == 200
    (item,) = (await client.get(url)).json()["items"]
    assert (item["status"], item["indicator"], item["opens"]) == ("opened", "green", 2)
    assert item["first_opened_at"] is not None
    # A click with no user agent within 3 s of delivery is a link scanner: a bot never
    # changes a person's status.
    assert (await service.hit(link)).status_code == 302
    (item,) = (await client.get(url)).json()["items"]
    assert (item["status"], item["clicks"], item["human_clicks"]) == ("opened", 1, 0)
    dom.update_domain(service.runtime.db, "example.com",
                      bot_thresholds=json.dumps({"click_after_delivery_seconds": 0}))
    assert (await service.hit(link, headers={"user-agent": BROWSER})).status_code == 302
    (item,) = (await client.get(url)).json()["items"]
    assert (item["status"], item["indicator"], item["human_clicks"]) == ("clicked", "blue", 1)
    r = await client.get(f"{BASE}/recipients/alice@example.org/messages")
    (mine,) = r.json()["items"]
    assert (mine["message_id"], mine["status"]) == (message_id, "clicked")


async def test_end_to_end_refused_recipient_is_red(
        service: Service, client: httpx.AsyncClient, smtp_relay: SmtpRelay) -> None:
    smtp_relay.reply = lambda rcpt: "550 5.1.1 No such user" if "bad" in rcpt else None
    message_id = (await service.send(to="bad@example.org", subject="x", text="hi")).strip("<>")
    await service.wait_events(1, event="failed")
    (item,) = (await client.get(f"{BASE}/messages/{message_id}/recipients")).json()["items"]
    assert (item["status"], item["indicator"]) == ("bounced", "red")
    assert item["delivery"]["code"] == 550


async def test_end_to_end_contact_is_created_and_scored(
        service: Service, client: httpx.AsyncClient, smtp_relay: SmtpRelay) -> None:
    """Waits for the recorder and intake changes: contact rows and scores."""
    _, _, pixel = await _send_and_track(service, smtp_relay, "Carol@example.org")
    r = await client.get(f"{BASE}/contacts/carol@example.org")
    assert r.status_code == 200, r.text
    assert r.json()["counts"]["messages"] == 1
    await service.hit(pixel, headers={"user-agent": "Mozilla/5.0 (Windows NT 10.0; Win64; "
                                      "x64; rv:128.0) Gecko/20100101 Thunderbird/128.0"})
    body = (await client.get(f"{BASE}/contacts/carol@example.org")).json()
    assert body["opens"] == 1 and body["score"] == pytest.approx(1.0, abs=0.001)
    assert body["last_activity_at"] is not None
    r = await client.get(f"{BASE}/contacts?min_score=0.5")
    assert [i["address"] for i in r.json()["items"]] == ["carol@example.org"]


async def test_end_to_end_consent_mode_anonymises_until_consent(
        service: Service, client: httpx.AsyncClient, smtp_relay: SmtpRelay) -> None:
    """Waits for the recorder change: track_activities=consent."""
    r = await client.put("/v3/domains/example.com/privacy", data={"track_activities": "consent"})
    assert r.status_code == 200
    _, _, pixel = await _send_and_track(service, smtp_relay, "dave@example.org")
    await service.hit(pixel)
    (opened,) = await service.events(event="opened")
    assert opened["recipient"] == "" and "ip" not in opened
    r = await client.put(f"{BASE}/contacts/dave@example.org/consent", data={"consent": "yes"})
    assert r.status_code == 200
    await service.hit(pixel)
    timeline = (await client.get(f"{BASE}/contacts/dave@example.org/timeline")).json()
    assert [e["event"] for e in timeline["items"]][:1] == ["opened"]


async def test_end_to_end_erasure_then_hits_record_nothing(
        service: Service, client: httpx.AsyncClient, smtp_relay: SmtpRelay) -> None:
    message_id, link, pixel = await _send_and_track(service, smtp_relay, "erin@example.org")
    await service.hit(pixel)
    assert await service.events(recipient="erin@example.org")
    r = await client.delete(f"{BASE}/contacts/erin@example.org")
    assert r.status_code == 200, r.text
    assert r.json()["events_deleted"] >= 3  # accepted, delivered, opened
    assert await service.events(recipient="erin@example.org") == []
    # Old links still answer (a person must not see an error) but store nothing.
    assert (await service.hit(pixel)).status_code == 200
    assert (await service.hit(link)).status_code in (302, 404)
    assert await service.events(recipient="erin@example.org") == []
    assert await service.events(event="opened") == []
    with db_of(service).read() as conn:
        assert conn.execute(select(func.count()).select_from(recipient_state)).scalar_one() \
            == 0
    r = await client.get(f"{BASE}/messages/{message_id}/recipients")
    assert r.status_code == 404


async def test_end_to_end_deferred_recipient_shows_its_next_retry(
        service: Service, client: httpx.AsyncClient, smtp_relay: SmtpRelay) -> None:
    smtp_relay.reply = lambda rcpt: "451 4.7.1 Try again later" if "slow" in rcpt else None
    message_id = (await service.send(to="slow@example.org", subject="x", text="hi")).strip("<>")
    await service.wait_events(1, event="failed")
    (item,) = (await client.get(f"{BASE}/messages/{message_id}/recipients")).json()["items"]
    assert (item["status"], item["indicator"]) == ("deferred", "gray")
    assert item["delivery"]["code"] == 451 and item["delivery"]["status"] == "queued"
    assert item["delivery"]["next_attempt_at"] is not None

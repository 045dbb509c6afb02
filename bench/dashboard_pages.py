"""Dashboard pages over a database holding about a million events.

    python bench/dashboard_pages.py [--events 1000000] [--runs 7] [--database-url URL]

Fills a fresh database (a SQLite file in a temporary folder unless --database-url names
an empty one) straight through bulk inserts, not the API: one domain, 30 days of mail,
campaigns of a few thousand recipients each plus single-recipient transactional mail,
with deliveries, per-recipient state, contacts, stats rollups, suppressions, a local
outbox and the events (accepted, delivered, failed, opened, clicked, unsubscribed,
complained) until there are `--events` of them. Then it logs in and times each main page
in process (httpx ASGITransport: routing, queries, templates; no network), median of
`--runs` requests after one warm-up, and prints milliseconds per page. Target: < 200 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailbeacon.dashboard import build_dashboard  # noqa: E402
from mailbeacon.dashboard.users import create_user  # noqa: E402
from mailbeacon.insight import engagement  # noqa: E402
from mailbeacon.model.ids import id_from_parts  # noqa: E402
from mailbeacon.runtime import Runtime  # noqa: E402
from mailbeacon.settings import Settings  # noqa: E402
from mailbeacon.storage import schema as s  # noqa: E402
from mailbeacon.storage.db import Database  # noqa: E402
from mailbeacon.storage.migrate import migrate  # noqa: E402

DOMAIN = "example.com"
DAYS = 30
US = 1_000_000
CHUNK = 20_000
USER, PASSWORD = "bench", "bench password"
AGENTS = [("Chrome", "Windows", "desktop"), ("Apple Mail", "iOS", "mobile"),
          ("Gmail", "Android", "mobile"), ("Outlook", "Windows", "desktop"),
          ("Firefox", "Linux", "desktop")]
COUNTRIES = ["US", "DE", "FR", "GB", "NL", "CA", "BR", "IN"]
LINKS = [f"https://shop.example.net/p/{i}" for i in range(8)]


def new_id(micros: int) -> str:
    return id_from_parts(micros, os.urandom(8))


class Filler:
    """Generates one domain's mail and writes it in bulk."""

    def __init__(self, db: Database, target_events: int, seed: int) -> None:
        self.db = db
        self.target = target_events
        self.rng = random.Random(seed)
        self.now = int(time.time()) * US
        self.start = self.now - DAYS * 86400 * US
        self.events: list[tuple[int, str, str, str, str, str | None, str, str]] = []
        self.stats: Counter[tuple[str, str, int]] = Counter()
        self.links: Counter[tuple[str, str]] = Counter()
        self.dims: Counter[tuple[str, str, str, str, int]] = Counter()
        self.contacts: dict[str, list[int]] = {}
        self.counts = Counter[str]()

    def run(self) -> None:
        rng = self.rng
        # ~3 events per recipient: campaigns of 2,000-6,000 and a stream of single mails.
        recipients_needed = self.target // 3
        people = [f"user{i}@{rng.choice(['gmail.com', 'yahoo.com', 'outlook.com', 'corp.example'])}"
                  for i in range(max(1000, recipients_needed // 6))]
        sent = 0
        campaign = 0
        messages: list[dict[str, Any]] = []
        deliveries: list[dict[str, Any]] = []
        states: list[dict[str, Any]] = []
        outbox: list[dict[str, Any]] = []
        while len(self.events) < self.target:
            if rng.random() < 0.02 or not sent:
                campaign += 1
                tag = f"campaign-{campaign}"
                size = rng.randint(2000, 6000)
            else:
                tag = rng.choice(["receipts", "password-reset", "welcome"])
                size = 1
            at = rng.randint(self.start, self.now - 3600 * US)
            row_id = new_id(at)
            message_id = f"{row_id}@{DOMAIN}"
            subject = f"{tag.replace('-', ' ').title()} #{sent}"
            headers = {"message-id": message_id, "from": f"Shop <shop@{DOMAIN}>",
                       "to": "", "subject": subject}
            mime = (f"From: Shop <shop@{DOMAIN}>\r\nSubject: {subject}\r\n"
                    f"Message-ID: <{message_id}>\r\nMIME-Version: 1.0\r\n"
                    "Content-Type: text/html; charset=utf-8\r\n\r\n"
                    f"<h1>{subject}</h1><p><a href=\"{LINKS[0]}\">Shop</a></p>\r\n").encode()
            messages.append({"id": row_id, "domain": DOMAIN, "message_id": message_id,
                             "created_at": at, "sender": f"shop@{DOMAIN}",
                             "headers": json.dumps(headers), "tags": json.dumps([tag]),
                             "user_variables": "{}", "options": "{}", "testmode": False,
                             "mime": mime})
            for address in rng.sample(people, min(size, len(people))):
                sent += 1
                delivery = new_id(at)
                self._recipient(at, delivery, message_id, address, tag, subject,
                                deliveries, states)
                if len(outbox) < 5000 and rng.random() < 0.05:
                    outbox.append({"id": new_id(at), "domain": DOMAIN, "delivery_id": delivery,
                                   "sender": f"bounce+x@{DOMAIN}", "recipient": address,
                                   "subject": subject, "data": mime, "created_at": at})
            if len(deliveries) >= CHUNK:
                self._flush(messages, deliveries, states)
        self._flush(messages, deliveries, states)
        self._finish(outbox)

    def _recipient(self, at: int, delivery: str, message_id: str, address: str, tag: str,
                   subject: str, deliveries: list[dict[str, Any]],
                   states: list[dict[str, Any]]) -> None:
        rng = self.rng
        ev = self._event
        ev(at, "accepted", address, message_id, delivery, tag, subject)
        failed = rng.random() < 0.02
        done = at + rng.randint(1, 30) * US
        ev(done, "failed" if failed else "delivered", address, message_id, delivery, tag,
           subject, "permanent" if failed else None)
        deliveries.append({"id": delivery, "message_id": messages_row(message_id),
                           "recipient": address, "status": "failed" if failed else "delivered",
                           "attempts": 1, "next_attempt_at": at, "updated_at": done,
                           "last_code": 550 if failed else 250,
                           "last_message": "no such user" if failed else "OK"})
        activity = self.contacts.setdefault(address, [0, 0, 0])
        if failed:
            self.counts["bounced"] += 1
            return
        opens = clicks = 0
        first_open = first_click = None
        if rng.random() < 0.45:
            opens = rng.choice([1, 1, 1, 2, 2, 3, 5])
            when = done
            for _ in range(opens):
                when += rng.randint(60, 86400) * US
                ev(when, "opened", address, message_id, delivery, tag, subject)
                first_open = first_open or when
            if rng.random() < 0.25:
                clicks = rng.choice([1, 1, 2])
                for _ in range(clicks):
                    when += rng.randint(5, 600) * US
                    url = rng.choice(LINKS)
                    ev(when, "clicked", address, message_id, delivery, tag, subject, url=url)
                    first_click = first_click or when
                    self.links[(tag, url)] += 1
            if rng.random() < 0.004:
                ev(when + US, "unsubscribed", address, message_id, delivery, tag, subject)
            elif rng.random() < 0.0005:
                ev(when + US, "complained", address, message_id, delivery, tag, subject)
        activity[0] += opens
        activity[1] += clicks
        activity[2] = max(activity[2], first_click or first_open or 0)
        if opens or clicks:
            states.append({"delivery_id": delivery, "domain": DOMAIN,
                           "first_open_at": first_open, "last_open_at": first_open,
                           "open_count": opens, "first_click_at": first_click,
                           "last_click_at": first_click, "click_count": clicks,
                           "human_open_count": opens, "human_click_count": clicks,
                           "first_human_open_at": first_open,
                           "first_human_click_at": first_click,
                           "recipient": address, "bounced": False})

    def _event(self, ts: int, name: str, address: str, message_id: str, delivery: str,
               tag: str, subject: str, severity: str | None = None, url: str = "") -> None:
        data: dict[str, Any] = {
            "event": name, "timestamp": ts / US, "log-level": "info", "recipient": address,
            "recipient-domain": address.rpartition("@")[2], "tags": [tag],
            "user-variables": {},
            "message": {"headers": {"message-id": message_id, "subject": subject}}}
        if name in ("opened", "clicked"):
            client, os_name, device = self.rng.choice(AGENTS)
            country = self.rng.choice(COUNTRIES)
            day = ts // US // 86400 * 86400
            for dim, value in (("client", client), ("os", os_name), ("device", device),
                               ("country", country)):
                for t in ("", tag):
                    self.dims[(t, name, dim, value, day)] += 1
            data.update({"ip": "203.0.113.7", "geolocation": {
                "country": country, "region": "Unknown", "city": "Unknown"},
                "client-info": {"client-name": client, "client-os": os_name,
                                "device-type": device, "bot": ""}})
        if url:
            data["url"] = url
        if severity:
            data.update({"severity": severity, "reason": "bounce",
                         "delivery-status": {"code": 550, "message": "no such user"}})
        self.events.append((ts, name, address, message_id, delivery, severity, tag,
                            json.dumps(data, separators=(",", ":"))))
        hour = ts // US // 3600 * 3600
        counters = {"failed": ["failed_permanent", "bounced"]}.get(name, [name])
        for counter in counters:
            for t in ("", tag):
                self.stats[(t, counter, hour)] += 1
        self.counts[name] += 1

    def _flush(self, messages: list[dict[str, Any]], deliveries: list[dict[str, Any]],
               states: list[dict[str, Any]]) -> None:
        with self.db.write() as conn:
            if messages:
                conn.execute(s.messages.insert(), messages)
            if deliveries:
                conn.execute(s.deliveries.insert(), deliveries)
            if states:
                conn.execute(s.recipient_state.insert(), states)
        messages.clear()
        deliveries.clear()
        states.clear()

    def _finish(self, outbox: list[dict[str, Any]]) -> None:
        self._unique_counters()
        self.events.sort()
        with self.db.write() as conn:
            for i in range(0, len(self.events), CHUNK):
                conn.execute(s.events.insert(), [
                    {"id": new_id(ts), "domain": DOMAIN, "ts": ts, "event": name,
                     "recipient": address, "message_id": message_id, "delivery_id": delivery,
                     "severity": severity, "tags": f"|{tag}|", "data": data}
                    for ts, name, address, message_id, delivery, severity, tag, data
                    in self.events[i:i + CHUNK]])
            conn.execute(s.stats_buckets.insert(), [
                {"domain": DOMAIN, "tag": t, "event": e, "hour": h, "count": n,
                 "human_count": n} for (t, e, h), n in self.stats.items()])
            dims = [{"domain": DOMAIN, "tag": t, "event": e, "dimension": dim, "value": v,
                     "day": day, "count": n, "human_count": n}
                    for (t, e, dim, v, day), n in self.dims.items()]
            for i in range(0, len(dims), CHUNK):
                conn.execute(s.dimension_stats.insert(), dims[i:i + CHUNK])
            conn.execute(s.link_stats.insert(), [
                {"domain": DOMAIN, "tag": t, "url": u, "clicks": n, "unique_clicks": n,
                 "human_clicks": n} for (t, u), n in self.links.items()])
            tags = {t for t, _, _ in self.stats if t}
            conn.execute(s.tags.insert(), [
                {"domain": DOMAIN, "tag": t, "description": "", "first_seen": self.start,
                 "last_seen": self.now} for t in tags])
            contacts = []
            for address, (opens, clicks, last) in self.contacts.items():
                score = opens + 3 * clicks
                contacts.append({"domain": DOMAIN, "address": address, "score": float(score),
                                 "score_at": last or self.start,
                                 "score_rank": engagement.rank(float(score),
                                                               last or self.start),
                                 "opens": opens, "clicks": clicks, "replies": 0,
                                 "last_activity_at": last or None, "created_at": self.start})
            for i in range(0, len(contacts), CHUNK):
                conn.execute(s.contacts.insert(), contacts[i:i + CHUNK])
            bounced = list(self.contacts)[:3000]
            conn.execute(s.suppressions.insert(), [
                {"domain": DOMAIN, "kind": "bounce", "address": a, "tag": "", "code": "550",
                 "error": "no such user", "created_at": self.start} for a in bounced])
            if outbox:
                conn.execute(s.local_outbox.insert(), outbox)

    def _unique_counters(self) -> None:
        seen: set[tuple[str, str]] = set()
        for ts, name, _, _, delivery, _, tag, _ in sorted(self.events):
            if name in ("opened", "clicked") and (delivery, name) not in seen:
                seen.add((delivery, name))
                hour = ts // US // 3600 * 3600
                for t in ("", tag):
                    self.stats[(t, f"unique_{name}", hour)] += 1


def messages_row(message_id: str) -> str:
    return message_id.partition("@")[0]  # the row id is the Message-ID's local part here


def fill(url: str, target: int, seed: int) -> dict[str, int]:
    db = Database(url)
    migrate(db)
    with db.write() as conn:
        conn.execute(s.domains.insert().values(
            name=DOMAIN, id=new_id(time.time_ns() // 1000), created_at=0, track_opens=True,
            track_clicks="yes", pixel_top=False))
    filler = Filler(db, target, seed)
    filler.run()
    with db.write() as conn:
        if db.is_sqlite:
            conn.exec_driver_sql("ANALYZE")
    with db.read() as conn:
        if not db.is_sqlite:
            conn.exec_driver_sql("ANALYZE")
        found = {t.name: int(conn.execute(sa.select(sa.func.count()).select_from(t))
                             .scalar_one())
                 for t in (s.messages, s.deliveries, s.events, s.contacts)}
    db.dispose()
    return found


async def time_pages(url: str, runs: int) -> list[tuple[str, float, int]]:
    runtime = Runtime(Settings(database_url=url), run_worker=False)
    create_user(runtime.db, USER, PASSWORD)
    app = build_dashboard(runtime)
    with runtime.db.read() as conn:
        big = conn.execute(sa.select(s.messages.c.id).where(
            s.messages.c.tags.like('%"campaign-1"%'))).scalar()
        small = conn.execute(sa.select(s.messages.c.id).where(
            s.messages.c.tags.like('%"receipts"%')).limit(1)).scalar()
        someone = conn.execute(sa.select(s.contacts.c.address).order_by(
            s.contacts.c.score_rank.desc()).limit(1)).scalar()
        outbox = conn.execute(sa.select(s.local_outbox.c.id).limit(1)).scalar()
        middle = conn.execute(sa.select(s.deliveries.c.id).order_by(s.deliveries.c.id)
                              .offset(10_000).limit(1)).scalar()
    d = f"/dashboard/{DOMAIN}"
    pages = [
        ("domains", "/dashboard/"),
        ("overview", f"{d}/"),
        ("overview chart (30d)", f"{d}/overview.svg?range=30d"),
        ("messages", f"{d}/messages"),
        ("messages, older page", f"{d}/messages?before={middle}"),
        ("messages by recipient", f"{d}/messages?recipient={someone}"),
        ("messages by subject", f"{d}/messages?subject=password"),
        ("messages by tag", f"{d}/messages?tag=campaign-2"),
        ("message (campaign)", f"{d}/messages/{big}"),
        ("message (single)", f"{d}/messages/{small}"),
        ("campaigns", f"{d}/campaigns"),
        ("campaign", f"{d}/campaigns/campaign-1"),
        ("campaign chart", f"{d}/campaigns/campaign-1/chart.svg"),
        ("campaign CSV", f"{d}/campaigns/campaign-1.csv"),
        ("contacts", f"{d}/contacts"),
        ("contact", f"{d}/contacts/{someone}"),
        ("suppressions", f"{d}/suppressions/bounces"),
        ("settings", f"{d}/settings"),
        ("webhooks", f"{d}/webhooks"),
        ("outbox", f"{d}/outbox"),
        ("outbox message", f"{d}/outbox/{outbox}"),
    ]
    results = []
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        login = await client.get("/dashboard/login")
        token = login.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        r = await client.post("/dashboard/login", data={"csrf": token, "username": USER,
                                                        "password": PASSWORD})
        assert r.status_code == 303, r.text
        for name, path in pages:
            timings = []
            for i in range(runs + 1):
                started = time.perf_counter()
                r = await client.get(path)
                elapsed = (time.perf_counter() - started) * 1000
                assert r.status_code == 200, (path, r.status_code, r.text[:300])
                if i:  # the first request warms caches
                    timings.append(elapsed)
            results.append((name, statistics.median(timings), len(r.content)))
    runtime.db.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database-url", default="",
                        help="an empty database (default: a temporary SQLite file)")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="mb-dash-bench-")
    url = args.database_url or f"sqlite:///{folder}/bench.db"
    try:
        started = time.perf_counter()
        counts = fill(url, args.events, args.seed)
        print(f"filled in {time.perf_counter() - started:.0f} s: "
              + ", ".join(f"{n:,} {t}" for t, n in counts.items()))
        results = asyncio.run(time_pages(url, args.runs))
        print(f"\n{'page':<26}{'median ms':>10}{'KB':>8}")
        for name, ms, size in results:
            flag = "" if ms < 200 else "  (over 200 ms)"
            print(f"{name:<26}{ms:>10.1f}{size / 1024:>8.1f}{flag}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

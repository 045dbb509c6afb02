"""Stats, campaign and Events API queries over 10 million events' worth of data.

    python bench/stats_queries.py [--events 10000000] [--backend sqlite|postgresql|both]
                                  [--runs 7] [--seed 1] [--postgres-url URL] [--workdir DIR]

Simulates 90 days of one domain's mail (~50 tags: transactional streams with a daily
rhythm, and campaigns sent in bursts whose opens and clicks trail off over days; bounces,
suppressions, Apple MPP prefetches, link scanners, unsubscribes, complaints) until it has
`--events` events. It writes them straight into the database, not through the API: the
`events` rows and their `event_tags` (bulk: executemany on SQLite, COPY on PostgreSQL,
secondary indexes built after the load) and the `stats_buckets`, `dimension_stats` and
`link_stats` rows those events produce (the rules of events/writer.py and
mailbeacon/failures.py). Then it times each query (median of `--runs`, after one
warm-up) on a fresh connection, and prints milliseconds per query per backend.

SQLite goes to a file in a temporary folder (removed afterwards); PostgreSQL to a fresh
schema of --postgres-url (dropped afterwards).
"""

from __future__ import annotations

import argparse
import calendar
import gc
import json
import os
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import sqlalchemy as sa

from mailbeacon.events.failures import NEW_FAILURE_COUNTERS, failure_counters
from mailbeacon.events.query import EventQuery, Filter, fetch_page, parse_query
from mailbeacon.insight import stats
from mailbeacon.model.ids import id_from_parts
from mailbeacon.storage.db import Database
from mailbeacon.storage.migrate import migrate
from mailbeacon.storage.schema import (
    dimension_stats,
    domains,
    event_tags,
    events,
    link_stats,
    stats_buckets,
    tags,
)

DOMAIN = "example.com"
DAYS = 90
END = calendar.timegm((2024, 6, 1, 0, 0, 0))  # fixed, so runs are comparable
START = END - DAYS * 86400
US = 1_000_000
HOUR_US = 3600 * US
DAY_US = 86400 * US
POSTGRES_URL = os.environ.get("MAILBEACON_TEST_POSTGRES",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/test")

# Event kinds of the simulation, and the stats counters each adds (events/writer.py).
ACC, DEL, FTMP, FBNC, FSUP, OPEN, CLICK, UNSUB, COMPL = range(9)
EVENT_NAME = ["accepted", "delivered", "failed", "failed", "failed", "opened", "clicked",
              "unsubscribed", "complained"]
SEVERITY = [None, None, "temporary", "permanent", "permanent", None, None, None, None]
# What the failed events say (their JSON), and so which counters they add.
FAILURES: dict[int, dict[str, Any]] = {
    FTMP: {"reason": "generic", "delivery-status": {"code": 421,
                                                    "message": "4.7.0 Try again later"}},
    FBNC: {"reason": "bounce", "delivery-status": {"code": 550,
                                                   "message": "5.1.1 User unknown"}},
    FSUP: {"reason": "suppress-bounce", "delivery-status": {"code": 605}},
}
FAILURE_COUNTERS = {kind: failure_counters(SEVERITY[kind] == "permanent", data)
                    for kind, data in FAILURES.items()}
COUNTERS = ["accepted", "delivered", "opened", "unique_opened", "clicked", "unique_clicked",
            "unsubscribed", "complained",
            *sorted({c for found in FAILURE_COUNTERS.values() for c in found})]
C = {name: i for i, name in enumerate(COUNTERS)}
KIND_COUNTERS = {ACC: (C["accepted"],), DEL: (C["delivered"],), OPEN: (C["opened"],),
                 CLICK: (C["clicked"],), UNSUB: (C["unsubscribed"],),
                 COMPL: (C["complained"],),
                 **{kind: tuple(C[c] for c in found) for kind, found in FAILURE_COUNTERS.items()}}
NO_DIMENSIONS = frozenset(C[c] for c in NEW_FAILURE_COUNTERS if c in C)

PROVIDERS = [("gmail.com", 35), ("yahoo.com", 9), ("outlook.com", 10), ("hotmail.com", 7),
             ("icloud.com", 8), ("aol.com", 2), ("gmx.de", 3), ("web.de", 2),
             ("orange.fr", 2), ("comcast.net", 2)] + [(f"company{i}.com", 0.4)
                                                      for i in range(50)]
COUNTRIES = [("US", 40), ("GB", 8), ("DE", 8), ("FR", 6), ("CA", 5), ("IN", 4), ("BR", 4),
             ("AU", 3), ("NL", 3), ("ES", 3), ("IT", 3), ("SE", 2), ("PL", 2), ("JP", 2),
             ("MX", 2), ("CH", 1), ("BE", 1), ("AT", 1), ("IE", 1), ("DK", 1), ("NO", 1),
             ("FI", 1), ("PT", 1), ("ZA", 1), ("SG", 1), ("NZ", 1), ("AR", 1), ("CL", 1),
             ("KR", 1), ("TR", 1)]
# (client, os, device, share of human hits)
PROFILES = [("Gmail", "Android", "mobile", 18), ("Apple Mail", "iOS", "mobile", 22),
            ("Apple Mail", "macOS", "desktop", 8), ("Outlook", "Windows", "desktop", 14),
            ("Chrome", "Windows", "desktop", 10), ("Samsung Email", "Android", "mobile", 5),
            ("Apple Mail", "iOS", "tablet", 4), ("Firefox", "Windows", "desktop", 3),
            ("Thunderbird", "Linux", "desktop", 1), ("Edge", "Windows", "desktop", 4),
            ("Yahoo Mail", "Android", "mobile", 3), ("Safari", "macOS", "desktop", 4)]
UNKNOWN_PROFILE = len(PROFILES)  # proxies and scanners: no device, no place
UNKNOWN_COUNTRY = len(COUNTRIES)
PROFILE_NAMES = [p[:3] for p in PROFILES] + [("unknown", "unknown", "unknown")]
COUNTRY_NAMES = [c for c, _ in COUNTRIES] + ["unknown"]
TRANSACTIONAL = ["welcome", "password-reset", "receipt", "shipping", "invoice", "digest",
                 "reminder", "verify-email", "order-update", "alert"]


@dataclass
class Rollups:
    """What the events add to the stats tables, keyed compactly while generating."""

    # (tagset, counter, hour) -> [count, human]
    buckets: dict[tuple[int, int, int], list[int]] = field(default_factory=dict)
    # (tagset, counter, day, provider, profile, country) -> [count, human]
    dims: dict[tuple[int, int, int, int, int, int], list[int]] = field(default_factory=dict)
    # (tagset, url) -> [clicks, unique, human]
    links: dict[tuple[int, str], list[int]] = field(default_factory=dict)


@dataclass
class Simulation:
    tagsets: list[tuple[str, ...]]
    d_msg: list[int] = field(default_factory=list)  # per delivery: message number
    d_rcpt: list[int] = field(default_factory=list)  # recipient number
    d_prov: list[int] = field(default_factory=list)  # provider index
    d_tags: list[int] = field(default_factory=list)  # tagset index
    d_sent: list[int] = field(default_factory=list)  # accepted at (µs)
    # (ts µs, kind, delivery, profile, country, bot, url)
    events: list[tuple[int, int, int, int, int, str, str]] = field(default_factory=list)
    rollups: Rollups = field(default_factory=Rollups)
    messages: int = 0


class Simulator:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.prov_cum = _cumulative(PROVIDERS)
        self.country_cum = _cumulative(COUNTRIES)
        self.profile_cum = _cumulative([(p[:3], p[3]) for p in PROFILES])
        self.hour_cum = _cumulative([(h, 2 + 8 * max(0.0, 1 - abs(h - 15) / 9))
                                     for h in range(24)])

    def run(self, target: int) -> Simulation:
        rng = self.rng
        campaigns = [f"campaign-{i:02d}" for i in range(39)]
        tagsets: list[tuple[str, ...]] = [(t,) for t in TRANSACTIONAL]
        tagsets += [(c,) if i % 2 else (c, "newsletter") for i, c in enumerate(campaigns)]
        sim = Simulation(tagsets)
        # ~60% of the events from campaigns (about 3.2 events a delivery), the rest
        # transactional until the target is met.
        weights = [rng.lognormvariate(0, 0.8) for _ in campaigns]
        per_campaign = [int(0.6 * target / 3.2 * w / sum(weights)) for w in weights]
        for i, size in enumerate(per_campaign):
            day = rng.randrange(DAYS - 1)
            hour = rng.choice(range(8, 18))
            begin = (START + day * 86400 + hour * 3600) * US
            spread = rng.uniform(1, 4) * HOUR_US
            tagset = len(TRANSACTIONAL) + i
            for k in range(size):
                if k % 1000 == 0:
                    sim.messages += 1
                self.delivery(sim, begin + int(spread * k / size), tagset, campaign=True)
        while len(sim.events) < target:
            day = rng.randrange(DAYS)
            hour = _pick(rng, self.hour_cum)
            sent = (START + day * 86400 + hour * 3600) * US + rng.randrange(HOUR_US)
            sim.messages += 1
            self.delivery(sim, sent, rng.randrange(len(TRANSACTIONAL)), campaign=False)
        sim.events.sort()
        return sim

    def delivery(self, sim: Simulation, sent: int, tagset: int, *, campaign: bool) -> None:
        rng = self.rng
        d = len(sim.d_msg)
        prov = _pick(rng, self.prov_cum)
        sim.d_msg.append(sim.messages)
        sim.d_rcpt.append(rng.randrange(2_000_000))
        sim.d_prov.append(prov)
        sim.d_tags.append(tagset)
        sim.d_sent.append(sent)
        emit = self._emitter(sim, d, tagset, prov)
        emit(sent, ACC)
        fate = rng.random()
        if fate < 0.01:
            emit(sent + rng.randrange(US), FSUP)
            return
        if fate < 0.03:
            emit(sent + rng.randrange(30 * US), FBNC)
            return
        delivered = sent + rng.randrange(1 * US, 20 * US)
        if fate < 0.045:
            emit(delivered, FTMP)
            delivered += rng.randrange(300 * US, 3600 * US)
        emit(delivered, DEL)
        self.engagement(sim, d, tagset, prov, delivered, emit, campaign=campaign)

    def engagement(self, sim: Simulation, d: int, tagset: int, prov: int, delivered: int,
                   emit: Callable[..., None], *, campaign: bool) -> None:
        rng = self.rng
        hits: list[tuple[int, int, int, int, str, str]] = []  # ts, kind, profile, country, bot
        provider = PROVIDERS[prov][0]
        urls = [f"https://shop.example.net/{sim.tagsets[tagset][0]}/{i}"
                for i in range(8 if campaign else 2)]
        if provider == "icloud.com" or rng.random() < 0.25:  # Apple MPP prefetch
            hits.append((delivered + rng.randrange(5 * US, 120 * US), OPEN, UNKNOWN_PROFILE,
                         UNKNOWN_COUNTRY, "apple", ""))
        if campaign and rng.random() < 0.04:  # a link scanner follows links at once
            for i in range(3):
                hits.append((delivered + rng.randrange(US) + i * 100_000, CLICK,
                             UNKNOWN_PROFILE, UNKNOWN_COUNTRY, "generic", urls[i % len(urls)]))
        if rng.random() < (0.3 if campaign else 0.55):
            proxied = provider == "gmail.com" and rng.random() < 0.5  # Google's image proxy
            profile = UNKNOWN_PROFILE if proxied else _pick(rng, self.profile_cum)
            country = UNKNOWN_COUNTRY if proxied else _pick(rng, self.country_cum)
            mean = (2 * 3600 if rng.random() < 0.7 else 30 * 3600) if campaign else 1200
            when = delivered + int(rng.expovariate(1 / mean) * US) + US
            while True:
                hits.append((when, OPEN, profile, country, "", ""))
                if rng.random() < (0.25 if campaign else 0.15):
                    weights = range(len(urls), 0, -1)
                    click_at = when
                    for _ in range(1 + int(rng.expovariate(1.5))):
                        click_at += int(rng.expovariate(1 / 60) * US) + US
                        url = rng.choices(urls, weights)[0]
                        hits.append((click_at, CLICK, profile, country, "", url))
                if rng.random() < 0.55:
                    break
                when += int(rng.expovariate(1 / 86400) * US) + US
            if campaign and rng.random() < 0.01:
                hits.append((when + 30 * US, UNSUB, profile, country, "", ""))
            if rng.random() < 0.001:
                emit(when + 600 * US, COMPL)
        hits.sort()
        first_open = first_human_open = first_click = first_human_click = False
        clicked: set[str] = set()
        for ts, kind, profile, country, bot, url in hits:
            human = 0 if bot in ("apple", "generic") else 1
            extra: list[tuple[int, int, int]] = []  # (counter, count, human) beyond the kind's
            if kind == CLICK and not first_open:  # a click first implies the open
                emit(ts, OPEN, profile, country, bot, "",
                     [(C["unique_opened"], 1, human)], human)
                first_open, first_human_open = True, bool(human)
            if kind == OPEN and (not first_open or (human and not first_human_open)):
                extra.append((C["unique_opened"], int(not first_open),
                              int(human and not first_human_open)))
                first_open, first_human_open = True, first_human_open or bool(human)
            if kind == CLICK:
                if human and not first_human_open:
                    extra.append((C["unique_opened"], 0, 1))
                    first_human_open = True
                if not first_click or (human and not first_human_click):
                    extra.append((C["unique_clicked"], int(not first_click),
                                  int(human and not first_human_click)))
                    first_click, first_human_click = True, first_human_click or bool(human)
                if ts < END * US:
                    link = sim.rollups.links.setdefault((tagset, url), [0, 0, 0])
                    link[0] += 1
                    link[1] += url not in clicked
                    link[2] += human
                clicked.add(url)
            emit(ts, kind, profile, country, bot, url, extra, human)

    def _emitter(self, sim: Simulation, d: int, tagset: int,
                 prov: int) -> Callable[..., None]:
        buckets, dims = sim.rollups.buckets, sim.rollups.dims
        limit = END * US

        def emit(ts: int, kind: int, profile: int = -1, country: int = -1, bot: str = "",
                 url: str = "", extra: Sequence[tuple[int, int, int]] = (),
                 human: int = 1) -> None:
            if ts >= limit:  # has not happened yet
                return
            sim.events.append((ts, kind, d, profile, country, bot, url))
            hour, day = ts // HOUR_US * 3600, ts // DAY_US * 86400
            adds = [(c, 1, human) for c in KIND_COUNTERS[kind]]
            for counter, n, h in (*adds, *extra):
                value = buckets.get((tagset, counter, hour))
                if value is None:
                    buckets[(tagset, counter, hour)] = [n, h]
                else:
                    value[0] += n
                    value[1] += h
                if counter in NO_DIMENSIONS:
                    continue
                key = (tagset, counter, day, prov, profile, country)
                value = dims.get(key)
                if value is None:
                    dims[key] = [n, h]
                else:
                    value[0] += n
                    value[1] += h

        return emit


def _cumulative(weighted: Sequence[tuple[Any, float]]) -> list[float]:
    total, out = 0.0, []
    for _, weight in weighted:
        total += weight
        out.append(total)
    return out


def _pick(rng: random.Random, cumulative: list[float]) -> int:
    x = rng.random() * cumulative[-1]
    lo, hi = 0, len(cumulative) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if cumulative[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo


# --- rows ------------------------------------------------------------------------------

EVENT_COLUMNS = ("id", "domain", "ts", "event", "recipient", "message_id", "delivery_id",
                 "severity", "tags", "data")


def event_rows(sim: Simulation, seed: int) -> Iterator[tuple[Any, ...]]:
    """The events rows, oldest first, with the JSON the Events API serves."""
    tag_cols = ["|" + "|".join(t) + "|" for t in sim.tagsets]
    tag_json = [",".join(f'"{t}"' for t in ts) for ts in sim.tagsets]
    profile_json = [f'"client-info":{{"client-name":"{c}","client-os":"{o}",'
                    f'"device-type":"{d}","client-type":"mobile browser","bot":"{{bot}}"}},'
                    for c, o, d in PROFILE_NAMES]
    # Per delivery once, not per event.
    recipients = [f"user{r}@{PROVIDERS[p][0]}" for r, p in zip(sim.d_rcpt, sim.d_prov,
                                                               strict=True)]
    delivery_ids = [id_from_parts(sent, d.to_bytes(8, "big"))
                    for d, sent in enumerate(sim.d_sent)]
    failures = {kind: json.dumps(data, separators=(",", ":"))[1:-1] + ","
                for kind, data in FAILURES.items()}
    for n, (ts, kind, d, profile, country, bot, url) in enumerate(sim.events):
        event_id = id_from_parts(ts, n.to_bytes(8, "big"))
        recipient = recipients[d]
        message_id = f"{sim.d_msg[d]:x}.{seed}@{DOMAIN}"
        delivery_id = delivery_ids[d]
        tagset = sim.d_tags[d]
        severity = SEVERITY[kind]
        name = EVENT_NAME[kind]
        extra = ""
        if severity is not None:
            extra = f'"severity":"{severity}",{failures[kind]}'
        elif profile >= 0:
            extra = (profile_json[profile].replace("{bot}", bot)
                     + f'"geolocation":{{"country":"{COUNTRY_NAMES[country]}"}},'
                     + '"ip":"203.0.113.7",' + (f'"url":"{url}",' if url else ""))
        data = (f'{{"event":"{name}","timestamp":{ts / US:.6f},"log-level":"info",'
                f'"recipient":"{recipient}","recipient-domain":"{PROVIDERS[sim.d_prov[d]][0]}",'
                f'"tags":[{tag_json[tagset]}],"user-variables":{{}},{extra}'
                f'"message":{{"headers":{{"message-id":"{message_id}",'
                f'"from":"News <news@{DOMAIN}>","to":"{recipient}","subject":"Hello"}}}},'
                f'"id":"{event_id}"}}')
        yield (event_id, DOMAIN, ts, name, recipient, message_id, delivery_id, severity,
               tag_cols[tagset], data)


def stats_rows(sim: Simulation) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]],
                                         list[tuple[Any, ...]]]:
    """stats_buckets, dimension_stats and link_stats rows, per tag and the "" total."""
    buckets: dict[tuple[str, int, int], list[int]] = {}
    for (tagset, counter, hour), (n, h) in sim.rollups.buckets.items():
        for tag in ("", *sim.tagsets[tagset]):
            value = buckets.setdefault((tag, counter, hour), [0, 0])
            value[0] += n
            value[1] += h
    dims: dict[tuple[str, int, str, str, int], list[int]] = {}
    for (tagset, counter, day, prov, profile, country), (n, h) in sim.rollups.dims.items():
        values = [("provider", PROVIDERS[prov][0])]
        if profile >= 0:
            client, os_name, device = PROFILE_NAMES[profile]
            values += [("client", client), ("os", os_name), ("device", device),
                       ("country", COUNTRY_NAMES[country])]
        for tag in ("", *sim.tagsets[tagset]):
            for dimension, value_name in values:
                value = dims.setdefault((tag, counter, dimension, value_name, day), [0, 0])
                value[0] += n
                value[1] += h
    links: dict[tuple[str, str], list[int]] = {}
    for (tagset, url), (clicks, unique, human) in sim.rollups.links.items():
        for tag in ("", *sim.tagsets[tagset]):
            value = links.setdefault((tag, url), [0, 0, 0])
            value[0] += clicks
            value[1] += unique
            value[2] += human
    return (
        [(DOMAIN, t, COUNTERS[c], hr, n, h) for (t, c, hr), (n, h) in buckets.items()],
        [(DOMAIN, t, COUNTERS[c], dim, v, day, n, h)
         for (t, c, dim, v, day), (n, h) in dims.items()],
        [(DOMAIN, t, u, c, q, h) for (t, u), (c, q, h) in links.items()],
    )


# --- loading ---------------------------------------------------------------------------


class Backend:
    """One database under test: made fresh, loaded in bulk, timed, then removed."""

    def __init__(self, name: str, workdir: str, postgres_url: str) -> None:
        self.name = name
        self.schema = ""
        self.folder = ""
        if name == "sqlite":
            self.folder = tempfile.mkdtemp(prefix="mailbeacon-bench-", dir=workdir)
            url = f"sqlite:///{self.folder}/bench.db"
        else:
            self.admin = sa.create_engine(postgres_url)
            self.schema = "bench_" + secrets.token_hex(6)
            with self.admin.begin() as conn:
                conn.execute(sa.text(f"CREATE SCHEMA {self.schema}"))
            url = f"{postgres_url}?options=-csearch_path%3D{self.schema}"
        self.db = Database(url)
        migrate(self.db)
        self.raw = self.db.engine.raw_connection()
        if name == "sqlite" and self.raw.driver_connection is not None:
            # A bench load: no crash safety needed while it runs.
            self.raw.driver_connection.execute("PRAGMA synchronous=OFF")
        with self.db.write() as conn:
            conn.execute(domains.insert().values(name=DOMAIN, id="0" * 26, created_at=0))
            for index in (*events.indexes, *event_tags.indexes):
                index.drop(conn)  # rebuilt after the load: far faster than row by row

    def insert(self, table: sa.Table, columns: Sequence[str],
               rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        driver = self.raw.driver_connection
        assert driver is not None
        if self.name == "sqlite":
            conn = driver
            marks = ",".join("?" * len(columns))
            conn.execute("BEGIN")
            conn.executemany(f"INSERT INTO {table.name} ({','.join(columns)}) VALUES ({marks})",
                             rows)
            conn.execute("COMMIT")
        else:
            with driver.cursor() as cur, cur.copy(
                    f"COPY {table.name} ({','.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            self.raw.commit()

    def finish_load(self) -> None:
        with self.db.write() as conn:
            for index in (*events.indexes, *event_tags.indexes):
                index.create(conn)
        # PostgreSQL's autovacuum would analyze the new tables soon; do it now. SQLite
        # never analyzes by itself, and mailbeacon does not ask it to: leave it so.
        if self.name == "postgresql":
            with self.db.engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                    "VACUUM ANALYZE")

    def size(self) -> str:
        if self.name == "sqlite":
            total = sum(os.path.getsize(os.path.join(self.folder, f))
                        for f in os.listdir(self.folder))
        else:
            with self.db.read() as conn:
                total = int(conn.execute(sa.text(
                    "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = :s AND c.relkind = 'r'"), {"s": self.schema}).scalar()
                            or 0)
        return f"{total / 2**30:.2f} GiB"

    def close(self, keep: bool = False) -> None:
        self.raw.close()
        self.db.dispose()
        if keep:
            print(f"kept {self.name}: {self.db.url}", file=sys.stderr)
            if self.name == "postgresql":
                self.admin.dispose()
        elif self.name == "sqlite":
            shutil.rmtree(self.folder, ignore_errors=True)
        else:
            with self.admin.begin() as conn:
                conn.execute(sa.text(f"DROP SCHEMA {self.schema} CASCADE"))
            self.admin.dispose()


def load(backends: list[Backend], sim: Simulation, seed: int) -> dict[str, dict[str, float]]:
    """Write everything to every backend; seconds per phase per backend."""
    spent: dict[str, dict[str, float]] = {b.name: {} for b in backends}
    batch: list[tuple[Any, ...]] = []
    started = time.perf_counter()
    building = 0.0

    tag_count = 0

    def flush() -> None:
        nonlocal tag_count
        # The Events API's tag index (db.insert_events writes it with every event).
        tag_rows = [(row[0], tag, DOMAIN) for row in batch for tag in row[8].split("|") if tag]
        tag_count += len(tag_rows)
        for backend in backends:
            t = time.perf_counter()
            backend.insert(events, EVENT_COLUMNS, batch)
            backend.insert(event_tags, ("event_id", "tag", "domain"), tag_rows)
            spent[backend.name]["events"] = spent[backend.name].get("events", 0.0) + (
                time.perf_counter() - t)
        batch.clear()

    for row in event_rows(sim, seed):
        batch.append(row)
        if len(batch) == 50_000:
            flush()
    flush()
    building = time.perf_counter() - started - sum(s.get("events", 0) for s in spent.values())
    t = time.perf_counter()
    bucket_rows, dim_rows, link_rows = stats_rows(sim)
    building += time.perf_counter() - t
    for backend in backends:
        spent[backend.name]["rows built (shared)"] = building
        t = time.perf_counter()
        backend.insert(stats_buckets, [c.name for c in stats_buckets.c], bucket_rows)
        backend.insert(dimension_stats, [c.name for c in dimension_stats.c], dim_rows)
        backend.insert(link_stats, [c.name for c in link_stats.c], link_rows)
        seen: dict[str, list[int]] = {}
        for tagset, sent in zip(sim.d_tags, sim.d_sent, strict=True):
            for tag in sim.tagsets[tagset]:
                span = seen.setdefault(tag, [sent, sent])
                span[0], span[1] = min(span[0], sent), max(span[1], sent)
        tag_rows = [(DOMAIN, t, "", first, last) for t, (first, last) in seen.items()]
        backend.insert(tags, ["domain", "tag", "description", "first_seen", "last_seen"],
                       tag_rows)
        spent[backend.name]["stats rows"] = time.perf_counter() - t
        t = time.perf_counter()
        backend.finish_load()
        spent[backend.name]["indexes"] = time.perf_counter() - t
    print(f"rows: {len(sim.events):,} events, {tag_count:,} event_tags, "
          f"{len(bucket_rows):,} stats_buckets, "
          f"{len(dim_rows):,} dimension_stats, {len(link_rows):,} link_stats",
          file=sys.stderr)
    return spent


# --- queries ---------------------------------------------------------------------------


def queries(sim: Simulation) -> list[tuple[str, Callable[[sa.Connection], Any]]]:
    sizes: dict[int, int] = {}
    for tagset in sim.d_tags:
        sizes[tagset] = sizes.get(tagset, 0) + 1
    biggest = max((s for s in sizes if s >= len(TRANSACTIONAL)), key=sizes.__getitem__)
    campaign = sim.tagsets[biggest][0]
    all_tags = sorted({t for names in sim.tagsets for t in names})
    period = stats.parse_period({"end": str(END - 1), "duration": "30d"})
    hourly = stats.parse_period({"end": str(END - 1), "duration": "7d", "resolution": "hour"})
    names = list(stats.EVENTS)
    # 90% of the way back in newest-first paging: as deep as paging gets in the log.
    deep = sim.events[len(sim.events) // 10]
    deep_id = id_from_parts(deep[0], (len(sim.events) // 10).to_bytes(8, "big"))
    return [
        ("stats/total, 30 days daily, 8 events",
         lambda c: stats.total_stats(c, DOMAIN, "", names, period)),
        ("stats/total, 7 days hourly, 8 events",
         lambda c: stats.total_stats(c, DOMAIN, "", names, hourly)),
        (f"tag stats {campaign}, 30 days daily",
         lambda c: stats.total_stats(c, DOMAIN, campaign, names, period)),
        (f"campaign report {campaign}",
         lambda c: stats.campaign_report(c, DOMAIN, campaign).to_json()),
        ("campaign report newsletter (20 campaigns)",
         lambda c: stats.campaign_report(c, DOMAIN, "newsletter").to_json()),
        (f"aggregates/countries {campaign}",
         lambda c: stats.aggregates(c, DOMAIN, campaign, "countries")),
        (f"campaign list ({len(all_tags)} tags, all time)",
         lambda c: stats.campaign_totals(c, DOMAIN, all_tags)),
        ("events page 100, 90% deep",
         lambda c: fetch_page(c, DOMAIN, EventQuery(cursor=deep_id))),
        ("events page 100, 90% deep, event=clicked",
         lambda c: fetch_page(c, DOMAIN, EventQuery(event=Filter.of("clicked"),
                                                    cursor=deep_id))),
        (f"events page 100, 90% deep, tags={campaign}",
         lambda c: fetch_page(c, DOMAIN, EventQuery(tag=Filter.of(campaign), cursor=deep_id))),
        ("events page 100, 90% deep, tags=receipt (a full page)",
         lambda c: _full(fetch_page(c, DOMAIN, EventQuery(tag=Filter.of("receipt"),
                                                          cursor=deep_id)))),
        (f"events page 100, 90% deep, tags={campaign}, event=clicked",
         lambda c: fetch_page(c, DOMAIN, EventQuery(tag=Filter.of(campaign),
                                                    event=Filter.of("clicked"),
                                                    cursor=deep_id))),
        ("events page 100, 90% deep, tags=newsletter NOT <campaign>",
         lambda c: fetch_page(c, DOMAIN, replace(parse_query(
             {"tags": f"newsletter NOT {campaign}"}), cursor=deep_id))),
        ("failures by category (30 days)",
         lambda c: stats.failure_breakdown(c, DOMAIN, "", period.first, period.upper)),
    ]


def _full(page: Any) -> Any:
    assert len(page.items) == 100, len(page.items)
    return page


def timed(db: Database, run: Callable[[sa.Connection], Any], runs: int) -> float:
    """Median milliseconds of `runs` runs after a warm-up, each on a fresh connection."""
    samples = []
    for i in range(runs + 1):
        t = time.perf_counter()
        with db.read() as conn:
            run(conn)
        if i:
            samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--postgres-url", default=POSTGRES_URL)
    parser.add_argument("--workdir", default=tempfile.gettempdir(),
                        help="where the SQLite file goes (it needs ~0.5 GB per million events)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the SQLite file and PostgreSQL schema, to explore them")
    args = parser.parse_args(argv)
    # Tens of millions of long-lived tuples, no cycles: the cyclic collector would scan
    # them over and over (measured: a third of the build time).
    gc.disable()
    names = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]

    t = time.perf_counter()
    sim = Simulator(args.seed).run(args.events)
    simulated = time.perf_counter() - t
    print(f"simulated {len(sim.events):,} events ({len(sim.d_msg):,} deliveries) in "
          f"{simulated:.1f} s", file=sys.stderr)
    backends = [Backend(name, args.workdir, args.postgres_url) for name in names]
    try:
        spent = load(backends, sim, args.seed)
        results = {b.name: [(label, timed(b.db, run, args.runs)) for label, run in queries(sim)]
                   for b in backends}
        sizes = {b.name: b.size() for b in backends}
    finally:
        for backend in backends:
            backend.close(keep=args.keep)

    width = max(len(label) for label, _ in next(iter(results.values())))
    print(f"\n{len(sim.events):,} events, {DAYS} days, {len(sim.tagsets)} tag sets; "
          f"median of {args.runs} runs, ms")
    print(f"{'query':<{width}}  " + "  ".join(f"{n:>10}" for n in names))
    for i, (label, _) in enumerate(next(iter(results.values()))):
        print(f"{label:<{width}}  " + "  ".join(f"{results[n][i][1]:>10.1f}" for n in names))
    print(f"\n{'load, s':<{width}}  " + "  ".join(f"{n:>10}" for n in names))
    print(f"{'simulate (shared)':<{width}}  " + "  ".join(f"{simulated:>10.1f}" for _ in names))
    for phase in ("rows built (shared)", "events", "stats rows", "indexes"):
        print(f"{phase:<{width}}  " + "  ".join(f"{spent[n][phase]:>10.1f}" for n in names))
    print(f"{'database size':<{width}}  " + "  ".join(f"{sizes[n]:>10}" for n in names))


if __name__ == "__main__":
    main()

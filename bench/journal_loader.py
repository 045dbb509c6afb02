"""The journal loader: how fast journaled hits go into the database.

    python bench/journal_loader.py [--hits 1000000] [--backend sqlite|postgresql|both]
                                   [--deliveries 50000] [--messages 50] [--webhooks]
                                   [--workdir DIR]

Makes a database (SQLite in a temporary folder, or a fresh PostgreSQL schema of
MAILBEACON_TEST_POSTGRES, dropped afterwards) holding `--messages` delivered messages to
`--deliveries` recipients in all, half of them tagged, and writes a journal of `--hits`
hits on them the way the tracking front does (track/spool.Spool.append: files of 10,000
hits): 72% opens, 28% clicks on 6 links, a few unsubscribes, from 40 user agents (mail
clients, browsers, Apple's and Google's proxies, scanners) and 20,000 addresses.

Then, in the same run, it times
- the baseline: every journal line parsed and inserted raw (one row per hit, one
  executemany and one transaction per file) into a table of the hit's columns: what the
  storage takes with none of mailbeacon's work;
- the loader: `Spool.replay(HitWriter.store, db.write)` as `mailbeacon load-journal`
  runs it, on a copy of the same journal,

and prints hits/s for each and the loader's ratio to the baseline. Afterwards it checks
that every hit is stored once and that the stats equal the events.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailbeacon.model.hit import Hit  # noqa: E402
from mailbeacon.model.ids import new_id  # noqa: E402
from mailbeacon.model.tokens import Kind  # noqa: E402
from mailbeacon.storage.db import Database, now_us  # noqa: E402
from mailbeacon.storage.migrate import migrate  # noqa: E402
from mailbeacon.storage.schema import (  # noqa: E402
    deliveries,
    domains,
    messages,
    webhooks,
)
from mailbeacon.track.hits import HitWriter  # noqa: E402
from mailbeacon.track.spool import Spool  # noqa: E402

DOMAIN = "example.com"
DAY = 86_400 * 1_000_000
AGENTS = [
    "Mozilla/5.0",  # Apple Mail Privacy Protection
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
    "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko)",
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:124.0) Gecko/20100101 Thunderbird/115.9.0",
    "python-requests/2.31.0",
    "curl/8.5.0",
    "",
] + [
    f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    f"Chrome/{v}.0.0.0 Safari/537.36" for v in range(100, 115)
] + [
    f"Mozilla/5.0 (Linux; Android {a}; Pixel {p}) AppleWebKit/537.36 (KHTML, like Gecko) "
    f"Chrome/123.0.0.0 Mobile Safari/537.36" for a in (12, 13, 14) for p in (6, 7, 8, 9, 5)
]
LINKS = [f"https://shop.example.net/product/{i}?utm_source=news" for i in range(6)]


def make_journal(folder: Path, ids: list[str], hits: int, seed: int) -> None:
    """`hits` hits on the deliveries `ids`, journaled as the front does."""
    rng = random.Random(seed)
    ips = [f"{rng.randint(11, 199)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}."
           f"{rng.randint(1, 254)}" for _ in range(20_000)]
    spool = Spool(folder)
    start = now_us() - DAY
    step = DAY // hits
    batch: list[Hit] = []
    for n in range(hits):
        roll = rng.random()
        delivery = ids[int(len(ids) * rng.random() ** 1.5)]  # some read it often
        ip, agent, ts = rng.choice(ips), rng.choice(AGENTS), start + n * step
        if roll < 0.72:
            batch.append(Hit(Kind.OPEN, delivery, ts, ip, agent))
        elif roll < 0.9995:
            link = rng.randrange(len(LINKS))
            batch.append(Hit(Kind.CLICK, delivery, ts, ip, agent, "GET", LINKS[link], link))
        else:
            batch.append(Hit(Kind.UNSUBSCRIBE, delivery, ts, ip, agent, "POST", "", 0, ""))
        if len(batch) == 64:  # about one turn of the front's event loop under load
            spool.append(batch)
            batch = []
    if batch:
        spool.append(batch)
    spool.close_if_older(0)


def seed(db: Database, deliveries_n: int, messages_n: int, subscribe: bool) -> list[str]:
    created = now_us() - 2 * DAY
    ids: list[str] = []
    with db.write() as conn:
        conn.execute(domains.insert().values(name=DOMAIN, id=new_id(), created_at=created))
        if subscribe:
            conn.execute(webhooks.insert(), [
                {"domain": DOMAIN, "webhook": w, "url": f"https://hooks.example.net/{w}",
                 "created_at": created} for w in ("clicked", "unsubscribed")])
        per = max(1, deliveries_n // messages_n)
        for m in range(messages_n):
            row_id = new_id(created + m)
            message_id = f"{row_id}@{DOMAIN}"
            tags = [f"campaign-{m}", "newsletter"] if m % 2 else []
            conn.execute(messages.insert().values(
                id=row_id, domain=DOMAIN, message_id=message_id, created_at=created + m,
                sender=f"news@{DOMAIN}",
                headers=json.dumps({"message-id": message_id, "subject": f"Issue {m}",
                                    "to": "reader@example.org", "from": f"news@{DOMAIN}"}),
                tags=json.dumps(tags), user_variables=json.dumps({"issue": m}),
                options="{}", mime=b"x"))
            rows = []
            for r in range(per):
                delivery = new_id(created + m)
                ids.append(delivery)
                rows.append({"id": delivery, "message_id": row_id,
                             "recipient": f"reader{m * per + r}@example{r % 7}.org",
                             "status": "delivered", "attempts": 1, "last_code": 250,
                             "next_attempt_at": created, "updated_at": created + 60_000_000})
            conn.execute(deliveries.insert(), rows)
    return ids


@contextlib.contextmanager
def database(backend: str, folder: Path) -> Iterator[Database]:
    if backend == "sqlite":
        db = Database(f"sqlite:///{folder / 'bench.db'}")
        try:
            yield db
        finally:
            db.dispose()
        return
    base = os.environ.get("MAILBEACON_TEST_POSTGRES",
                          "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    schema = "bench_" + secrets.token_hex(6)
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    db = Database(f"{base}?options=-csearch_path%3D{schema}")
    try:
        yield db
    finally:
        db.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def baseline(db: Database, journal: Path) -> float:
    """Seconds to parse every journal line and insert it raw, one transaction per file."""
    with db.write() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE raw_hits (kind INTEGER, delivery_id VARCHAR(26), ts BIGINT, "
            "ip TEXT, user_agent TEXT, method TEXT, url TEXT, link_index INTEGER, "
            "scope TEXT)")
    mark = "?" if db.is_sqlite else "%s"
    sql = f"INSERT INTO raw_hits VALUES ({', '.join([mark] * 9)})"
    started = time.perf_counter()
    for path in sorted(journal.glob("hits-*")):
        rows = [json.loads(line) for line in path.read_bytes().splitlines()]
        with db.write() as conn:
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            cursor.executemany(sql, rows)
            cursor.close()
    return time.perf_counter() - started


def check(db: Database, hits: int) -> str:
    with db.read() as conn:
        counted = dict(conn.exec_driver_sql(
            "SELECT event, count(*) FROM events GROUP BY event").fetchall())
        stats = dict(conn.exec_driver_sql(
            "SELECT event, sum(count) FROM stats_buckets WHERE tag = '' "
            "GROUP BY event").fetchall())
        implied = conn.execute(sa.text(
            "SELECT count(*) FROM events WHERE event = 'opened' AND data LIKE :flag"),
            {"flag": "%is-implied-by-click%"}).scalar() or 0
    stored = sum(counted.get(e, 0) for e in ("opened", "clicked", "unsubscribed")) - implied
    same = all(int(stats.get(e, 0)) == n for e, n in counted.items())
    return (f"events {sum(counted.values())} ({stored} hits + {implied} implied opens): "
            f"{'every hit once' if stored == hits else 'MISMATCH'}, stats "
            f"{'equal the events' if same else 'DIFFER from the events'}")


def run(backend: str, args: argparse.Namespace, work: Path) -> tuple[float, float, str]:
    folder = work / backend
    folder.mkdir()
    with database(backend, folder) as db:
        migrate(db)
        ids = seed(db, args.deliveries, args.messages, args.webhooks)
        journal = folder / "journal"
        make_journal(journal, ids, args.hits, args.seed)
        spare = folder / "journal-copy"
        shutil.copytree(journal, spare)
        base = baseline(db, spare)
        shutil.rmtree(spare)
        spool = Spool(journal)
        writer = HitWriter()
        started = time.perf_counter()
        loaded = 0
        while spool.pending():
            loaded += spool.replay(writer.store, db.write)
        took = time.perf_counter() - started
        print(f"{backend}: loaded {loaded} hits in {took:.1f} s, raw insert {base:.1f} s",
              flush=True)
        assert loaded == args.hits, (loaded, args.hits)
        return args.hits / took, args.hits / base, check(db, args.hits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hits", type=int, default=1_000_000)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"),
                        default="both")
    parser.add_argument("--deliveries", type=int, default=50_000)
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--webhooks", action="store_true",
                        help="subscribe webhooks to clicks and unsubscribes (fan-out rows)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mb-loader-", dir=args.workdir))
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    results = {}
    try:
        for backend in backends:
            results[backend] = run(backend, args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.hits} journaled hits, {args.deliveries} deliveries of {args.messages} "
          f"messages, webhooks {'on' if args.webhooks else 'off'}, {os.cpu_count()} cores")
    print(f"{'backend':<12}{'loader hits/s':>15}{'raw insert/s':>15}{'x raw':>8}")
    for backend, (loader, raw, _) in results.items():
        print(f"{backend:<12}{loader:>15,.0f}{raw:>15,.0f}{loader / raw:>8.3f}")
    for backend, (_, _, checked) in results.items():
        print(f"{backend}: {checked}")


if __name__ == "__main__":
    main()

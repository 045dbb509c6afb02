"""Two `mailbeacon serve` processes on one PostgreSQL share the work: nothing is sent
twice, no webhook is posted twice, and stats equal the events."""

from __future__ import annotations

import re
import signal
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from mailbeacon.storage.db import Database
from mailbeacon.storage.schema import events, stats_buckets
from mailbeacon.webhooks.store import signing_key
from tests.support import SmtpRelay, free_port
from tests.test_faults import _serve
from tests.webhooks.receiver import Receiver
from tests.webhooks.test_webhook_crash import _api


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_processes_share_one_database(tmp_path: Path, database_url: str,
                                          smtp_relay: SmtpRelay) -> None:
    ports = [free_port(), free_port()]
    procs = []
    db = Database(database_url)
    receiver = None
    try:
        procs.append(_serve(ports[0], database_url, smtp_relay.url, tmp_path / "a"))
        procs.append(_serve(ports[1], database_url, smtp_relay.url, tmp_path / "b"))
        _api(ports[0], "/v3/domains", [("name", "example.com")])
        key = signing_key(db, "example.com")
        receiver = Receiver(lambda: key).start()
        for webhook in ("delivered", "opened"):
            _api(ports[1], "/v3/domains/example.com/webhooks", [("id", webhook),
                                                                 ("url", receiver.url)])

        def send(i: int) -> None:
            _api(ports[i % 2], "/v3/example.com/messages", [
                ("from", "shop@example.com"), ("to", f"user{i}@example.org"),
                ("subject", f"m{i}"), ("html", "<p>hello</p>")])

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(send, range(60)))
        deadline = time.time() + 60
        while len(smtp_relay.received) < 60 and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(2)  # anything sent twice would arrive now
        recipients = [r.recipients[0] for r in smtp_relay.received]
        assert len(recipients) == 60 and len(set(recipients)) == 60
        # Opens through both processes.
        for n, item in enumerate(smtp_relay.received[:30]):
            (pixel,) = re.findall(r'src="http://[^/]+(/o/[a-z0-9]+)"', item.part("text/html"))
            urllib.request.urlopen(f"http://127.0.0.1:{ports[n % 2]}{pixel}", timeout=10).read()
        while len(receiver.events()) < 90 and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(2)
        posted = [e["id"] for e in receiver.events()]
        assert len(posted) == 90 and len(set(posted)) == 90  # 60 delivered + 30 opened
        with db.read() as conn:
            counted = dict(conn.execute(
                sa.select(stats_buckets.c.event, sa.func.sum(stats_buckets.c.count))
                .where(stats_buckets.c.tag == "").group_by(stats_buckets.c.event)).all())
            stored = dict(conn.execute(sa.select(events.c.event, sa.func.count())
                                       .group_by(events.c.event)).all())
        for event in ("accepted", "delivered", "opened"):
            assert counted[event] == stored[event]
        assert stored["delivered"] == 60 and stored["opened"] == 30
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
        if receiver is not None:
            receiver.stop()
        db.dispose()

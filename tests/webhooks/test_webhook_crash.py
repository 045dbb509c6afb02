"""kill -9 of `mailbeacon serve` while webhooks are in flight loses no event."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import sqlalchemy as sa

from mailbeacon.storage.db import Database
from mailbeacon.storage.schema import events
from mailbeacon.webhooks.store import signing_key
from tests.support import api as _api
from tests.support import free_port, serve
from tests.webhooks.receiver import Receiver


def _serve(port: int, url: str, cwd: Path) -> subprocess.Popen[bytes]:
    return serve(port, url, cwd, env={"MAILBEACON_WEBHOOK_TIMEOUT": "2"})


def test_kill_9_during_deliveries(tmp_path: Path, database_url: str) -> None:
    db = Database(database_url)
    port = free_port()
    proc = _serve(port, database_url, tmp_path)
    keys: list[str] = []
    receiver = Receiver(lambda: keys[0]).start()
    try:
        _api(port, "/v3/domains", [("name", "example.com")])
        keys.append(signing_key(db, "example.com"))
        for webhook in ("accepted", "delivered"):
            _api(port, "/v3/domains/example.com/webhooks", [("id", webhook),
                                                             ("url", receiver.url)])
        receiver.delay = 0.3  # posts stay in flight for a while
        for i in range(15):
            _api(port, "/v3/example.com/messages", [
                ("from", "shop@example.com"), ("to", f"user{i}@example.org"),
                ("subject", "x"), ("text", "y"), ("o:testmode", "yes")])
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)  # mid-flight
        proc.wait(10)
        seen_before_restart = len(receiver.events())
        receiver.delay = 0.0
        proc = _serve(port, database_url, tmp_path)
        with db.read() as conn:
            stored = set(conn.execute(sa.select(events.c.id)).scalars())
        deadline = time.time() + 60  # leases of the killed process expire after 14 s
        while time.time() < deadline:
            with db.read() as conn:
                stored = set(conn.execute(sa.select(events.c.id)).scalars())
            if len(stored) == 30 and {e["id"] for e in receiver.events()} >= stored:
                break
            time.sleep(0.2)
        received = [e["id"] for e in receiver.events()]
        assert len(stored) == 30  # 15 accepted + 15 delivered
        assert set(received) == stored  # every event reached the receiver
        assert receiver.forged == 0
        assert seen_before_restart < 30  # the kill really interrupted deliveries
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        receiver.stop()
        db.dispose()

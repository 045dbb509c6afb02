"""kill -9 of `mailbeacon serve` while webhooks are in flight loses no event."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import sqlalchemy as sa

from mailbeacon.storage.db import Database
from mailbeacon.storage.schema import events
from mailbeacon.webhooks.store import signing_key
from tests.conftest import API_KEY, free_port
from tests.webhooks.receiver import Receiver


def _api(port: int, path: str, fields: list[tuple[str, str]]) -> dict[str, object]:
    auth = base64.b64encode(f"api:{API_KEY}".encode()).decode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=urlencode(fields).encode(),
        headers={"authorization": f"Basic {auth}"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        return dict(json.loads(answer.read()))


def _serve(port: int, url: str, cwd: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MAILBEACON_API_KEY": API_KEY, "MAILBEACON_DATABASE_URL": url,
           "MAILBEACON_WEBHOOK_TIMEOUT": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "mailbeacon", "serve", "--http",
                             f"127.0.0.1:{port}"], env=env, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
        except urllib.error.HTTPError:
            return proc  # answering (401): up
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("serve did not start")


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

"""kill -9 of `mailbeacon serve` under tracking load: every answered hit is stored."""

from __future__ import annotations

import http.client
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from mailbeacon.storage.db import Database
from mailbeacon.storage.schema import events
from tests.support import SmtpRelay, free_port, serve
from tests.support import api as _api


def _serve(port: int, url: str, relay: str, cwd: Path,
           recording: str = "commit") -> subprocess.Popen[bytes]:
    return serve(port, url, cwd, "--relay", relay, env={"MAILBEACON_RECORDING": recording})


@pytest.mark.parametrize("recording", ["commit", "journal"])
def test_kill_9_under_tracking_load(tmp_path: Path, database_url: str, smtp_relay: SmtpRelay,
                                    recording: str) -> None:
    port = free_port()
    proc = _serve(port, database_url, smtp_relay.url, tmp_path, recording)
    try:
        _api(port, "/v3/domains", [("name", "example.com")])
        _api(port, "/v3/example.com/messages", [
            ("from", "shop@example.com"), ("to", "alice@example.org"), ("subject", "x"),
            ("html", "<p>hello</p>")])
        deadline = time.time() + 10
        while not smtp_relay.received and time.time() < deadline:
            time.sleep(0.05)
        (pixel,) = re.findall(r'src="http://[^/]+(/o/[a-z0-9]+)"',
                              smtp_relay.received[0].part("text/html"))
        acknowledged = 0
        lock = threading.Lock()
        stop = threading.Event()

        def load() -> None:
            nonlocal acknowledged
            while not stop.is_set():
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    while not stop.is_set():
                        conn.request("GET", pixel)
                        answer = conn.getresponse()
                        answer.read()
                        if answer.status == 200:
                            with lock:
                                acknowledged += 1
                except (OSError, http.client.HTTPException):
                    return  # the server is gone, perhaps mid-answer

        threads = [threading.Thread(target=load) for _ in range(8)]
        for thread in threads:
            thread.start()
        time.sleep(2.0)
        proc.send_signal(signal.SIGKILL)  # mid-load, no chance to clean up
        proc.wait(10)
        stop.set()
        for thread in threads:
            thread.join(10)
        assert acknowledged > 50, "the load did not get going"
        # Restart: it loads what the killed process journaled or spooled.
        proc = _serve(port, database_url, smtp_relay.url, tmp_path, recording)
        db = Database(database_url)
        try:
            for _ in range(100):
                with db.read() as conn:
                    stored = conn.execute(sa.select(sa.func.count()).select_from(events)
                                          .where(events.c.event == "opened")).scalar_one()
                if stored >= acknowledged:
                    break
                time.sleep(0.2)
        finally:
            db.dispose()
        # Every hit that got its GIF was committed first; a few more may have been
        # committed whose answer never arrived.
        assert stored >= acknowledged
        assert stored <= acknowledged + 8 * 64
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

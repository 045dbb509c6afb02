"""Helpers several test files share: counting stored events, holding the database's
write lock, and `mailbeacon serve` in a subprocess driven over HTTP."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import sqlalchemy as sa

from mailbeacon.storage.db import Database
from mailbeacon.storage.schema import events
from tests.support.service import API_KEY


def count_events(db: Database, event: str) -> int:
    """How many events of this kind are stored."""
    with db.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(events)
                                .where(events.c.event == event)).scalar_one())


@contextlib.contextmanager
def database_held(db: Database, hold_for: float = 30) -> Iterator[threading.Event]:
    """Another writer holds the database (SQLite's write lock; the events table on
    PostgreSQL) until the event is set, `hold_for` seconds pass, or the block ends:
    hits wait for their commit meanwhile."""
    release, locked = threading.Event(), threading.Event()

    def hold() -> None:
        with db.write() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("LOCK TABLE events IN EXCLUSIVE MODE"))
            conn.execute(sa.text("SELECT 1"))
            locked.set()
            release.wait(hold_for)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert locked.wait(5)
        yield release
    finally:
        release.set()
        holder.join()


def api(port: int, path: str, fields: list[tuple[str, str]]) -> dict[str, object]:
    """POST a form to a served mailbeacon's API (with the test key); its JSON answer."""
    auth = base64.b64encode(f"api:{API_KEY}".encode()).decode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=urlencode(fields).encode(),
        headers={"authorization": f"Basic {auth}"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        return dict(json.loads(answer.read()))


def listeners(port: int) -> int:
    """Sockets listening on `port` (each process binds its own with SO_REUSEPORT)."""
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for line in lines
               if line.split()[1].endswith(f":{port:04X}") and line.split()[3] == "0A")


def _answers(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).close()
    except urllib.error.HTTPError:
        return True  # an answer (401 without the key): up
    except OSError:
        return False
    return True


def serve(port: int, url: str, cwd: Path, *args: str, processes: int = 1,
          env: dict[str, str] | None = None,
          stderr: int = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    """`mailbeacon serve --http 127.0.0.1:PORT ARGS` in `cwd` (made if missing) on the
    database `url`, returned once its `processes` HTTP processes all listen and it
    answers; killed, and an error, if that takes over 30 s."""
    cwd.mkdir(parents=True, exist_ok=True)
    environment = {**os.environ, "MAILBEACON_API_KEY": API_KEY,
                   "MAILBEACON_DATABASE_URL": url, **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "mailbeacon", "serve", "--http",
                             f"127.0.0.1:{port}", *args], env=environment, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        if listeners(port) == processes and _answers(port):
            return proc
        time.sleep(0.05)
    proc.kill()
    proc.wait(10)
    raise AssertionError(f"serve did not start its {processes} HTTP process(es)")


class ManualClock:
    """A microsecond clock the test moves by hand (`clock.now += ...`), for the delivery
    worker's retries and leases."""

    def __init__(self, start: int) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now

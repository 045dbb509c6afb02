"""`mailbeacon serve --http-processes N`: N processes answer on one port, share the
tracking load, and never outlive serve."""

from __future__ import annotations

import http.client
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from mailbeacon.storage.db import Database
from mailbeacon.storage.schema import events, installation
from tests.support import SmtpRelay, free_port, serve
from tests.support import api as _api


def _start(port: int, url: str, relay: str, cwd: Path, processes: int,
           recording: str = "journal") -> subprocess.Popen[bytes]:
    return serve(port, url, cwd, "--relay", relay, processes=processes,
                 env={"MAILBEACON_RECORDING": recording,
                      "MAILBEACON_HTTP_PROCESSES": str(processes)},
                 stderr=subprocess.PIPE)


def _children(pid: int) -> list[int]:
    """Pids of the processes whose parent is `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _pixel(port: int, relay: SmtpRelay) -> str:
    _api(port, "/v3/example.com/messages", [
        ("from", "shop@example.com"), ("to", "alice@example.org"), ("subject", "x"),
        ("html", "<p>hello</p>")])
    deadline = time.time() + 10
    while not relay.received and time.time() < deadline:
        time.sleep(0.05)
    (pixel,) = re.findall(r'src="http://[^/]+(/o/[a-z0-9]+)"', relay.received[0].part("text/html"))
    return pixel


def _opened(url: str) -> int:
    db = Database(url)
    try:
        with db.read() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(events)
                                    .where(events.c.event == "opened")).scalar_one())
    finally:
        db.dispose()


def _journal_pids(url: str) -> set[str]:
    """The pids that wrote the journal files loaded so far (their names hold them)."""
    db = Database(url)
    try:
        with db.read() as conn:
            names = conn.execute(sa.select(installation.c.name)
                                 .where(installation.c.name.like("spool:hits-%"))).scalars()
            return {name.split("-")[1] for name in names}
    finally:
        db.dispose()


def _hits(port: int, path: str, connections: int, per_connection: int) -> int:
    """`connections` keep-alive connections, each its own; the 200s counted."""
    answered = 0
    lock = threading.Lock()

    def one() -> None:
        nonlocal answered
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for _ in range(per_connection):
            conn.request("GET", path)
            answer = conn.getresponse()
            answer.read()
            if answer.status == 200:
                with lock:
                    answered += 1
        conn.close()

    threads = [threading.Thread(target=one) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return answered


def _wait_for(check: object, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"not reached in time: {what}")


@pytest.fixture
def three(tmp_path: Path, database_url: str,
          smtp_relay: SmtpRelay) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    proc = _start(port, database_url, smtp_relay.url, tmp_path, 3)
    _api(port, "/v3/domains", [("name", "example.com")])
    yield port, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def test_processes_share_the_port_and_every_hit_is_stored(
        three: tuple[int, subprocess.Popen[bytes]], database_url: str,
        smtp_relay: SmtpRelay) -> None:
    port, proc = three
    pixel = _pixel(port, smtp_relay)
    answered = _hits(port, pixel, connections=24, per_connection=20)
    assert answered == 480
    _wait_for(lambda: _opened(database_url) >= 480)
    time.sleep(0.5)
    assert _opened(database_url) == 480  # each once
    pids = _journal_pids(database_url)
    assert len(pids) >= 2, pids  # the kernel gave connections to more than one process
    assert pids <= {str(proc.pid), *map(str, _children(proc.pid))}


def test_sigterm_stops_every_process(three: tuple[int, subprocess.Popen[bytes]]) -> None:
    port, proc = three
    children = _children(proc.pid)
    assert len(children) == 3  # two more HTTP processes and the journal loader
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled
    _wait_for(lambda: not any(_alive(pid) for pid in children), timeout=10)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    assert proc.stderr is not None
    assert "Traceback" not in proc.stderr.read().decode()


def test_kill_9_of_serve_ends_its_processes_and_loses_no_hit(
        three: tuple[int, subprocess.Popen[bytes]], database_url: str,
        smtp_relay: SmtpRelay, tmp_path: Path) -> None:
    port, proc = three
    pixel = _pixel(port, smtp_relay)
    children = _children(proc.pid)
    answered = _hits(port, pixel, connections=12, per_connection=25)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    # Orphans would go on answering on the port: each stops within a second or two.
    _wait_for(lambda: not any(_alive(pid) for pid in children), timeout=15,
              what=f"{[p for p in children if _alive(p)]} still alive")
    restarted = _start(port, database_url, smtp_relay.url, tmp_path, 2)
    try:
        _wait_for(lambda: _opened(database_url) >= answered,
                  what=f"{_opened(database_url)} of {answered} stored")
        assert _opened(database_url) == answered
    finally:
        restarted.kill()
        restarted.wait(10)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_commit_mode_with_two_processes(tmp_path: Path, database_url: str,
                                        smtp_relay: SmtpRelay) -> None:
    """Without a journal each process commits its own hits: answered means stored."""
    port = free_port()
    proc = _start(port, database_url, smtp_relay.url, tmp_path, 2, recording="commit")
    try:
        _api(port, "/v3/domains", [("name", "example.com")])
        pixel = _pixel(port, smtp_relay)
        assert _hits(port, pixel, connections=8, per_connection=10) == 80
        assert _opened(database_url) == 80
    finally:
        proc.kill()
        proc.wait(10)


def test_a_taken_port_and_a_bad_count_are_clear_errors(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "mailbeacon", "serve", "--http", f"127.0.0.1:{port}",
             "--database-url", f"sqlite:///{tmp_path / 'x.db'}"],
            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
    result = subprocess.run([sys.executable, "-m", "mailbeacon", "serve", "--http-processes",
                             "0"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2
    assert "MAILBEACON_HTTP_PROCESSES must be between 1 and 64" in result.stderr

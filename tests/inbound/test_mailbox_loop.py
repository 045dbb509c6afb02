"""The runtime's mailbox poller: no server answer ends it, and shutdown survives it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from mailbeacon.runtime import mailbox_delay
from tests.inbound.mailservers import Pop3Server, _Connection

BOUNCE = (b"From: MAILER-DAEMON@mx.example.net\r\nTo: bounces@example.com\r\n"
          b"Subject: Undelivered Mail\r\nMessage-ID: <1@mx.example.net>\r\n\r\n"
          b"The message could not be delivered.\r\n")


def _broken_stat(times: int) -> Callable[[_Connection, str], bool]:
    """STAT answered with nonsense the first `times` sessions, then as it should be."""
    left = [times]

    def answer(conn: _Connection, arg: str) -> bool:
        if left[0] <= 0:
            return False
        left[0] -= 1
        conn.send("+OK lots many")
        return True

    return answer


async def test_the_poller_survives_malformed_answers_and_polls_on(
        service_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Two polls meet `+OK lots many` (which ended the poller for good, silently): each
    is logged, and the third, a second or two later, fetches the mail."""
    server = Pop3Server(username="bounces", password="pw", hostile={"STAT": _broken_stat(2)})
    server.start()
    server.messages.append(BOUNCE)
    caplog.set_level(logging.WARNING, "mailbeacon")
    try:
        async with service_factory(
                bounce_mailbox=f"pop3://bounces:pw@127.0.0.1:{server.port}",
                bounce_mailbox_interval=1.0) as service:
            for _ in range(200):  # 1 s, then 1 s, then 2 s of backoff
                if not server.messages:
                    break
                await asyncio.sleep(0.1)
            assert server.messages == []
            task = next(t for t in service.runtime._tasks if t.get_name() == "mailbox")
            assert not task.done()
    finally:
        server.stop()
    assert server.commands.count("STAT") == 3
    assert caplog.text.count("malformed STAT answer") == 2


async def test_shutdown_tolerates_a_poller_that_ended(service_factory: Any,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    async with service_factory() as service:
        async def fails() -> None:
            raise RuntimeError("a background task that died")

        task = asyncio.create_task(fails(), name="mailbox")
        await asyncio.sleep(0)
        service.runtime._tasks.append(task)
    assert "a background task that died" in caplog.text  # stopped anyway, and said why


async def test_shutdown_cuts_a_poll_under_way(service_factory: Any) -> None:
    """A server trickling its STAT answer (a poll that would run to its 5 minute
    deadline): stopping mailbeacon cuts the session at once, instead of leaving a thread
    that holds the process's exit."""
    trickling = threading.Event()

    def trickle(conn: _Connection, arg: str) -> bool:
        trickling.set()
        with contextlib.suppress(OSError):
            for _ in range(300):  # a minute
                conn.sock.sendall(b"+")
                time.sleep(0.2)
        return True

    server = Pop3Server(username="bounces", password="pw", hostile={"STAT": trickle})
    server.start()
    try:
        async with service_factory(bounce_mailbox=f"pop3://bounces:pw@127.0.0.1:{server.port}"):
            assert await asyncio.to_thread(trickling.wait, 10)
        start = time.monotonic()
    finally:
        server.stop()  # waits for its session: until the client hangs up
    assert time.monotonic() - start < 10


def test_backoff() -> None:
    assert [mailbox_delay(60, n) for n in range(5)] == [60, 60, 120, 240, 480]
    assert mailbox_delay(60, 30) == 3600
    assert mailbox_delay(7200, 30) == 7200

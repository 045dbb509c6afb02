"""Per-address limits of the SMTP server, with smtplib over real loopback sockets:
unauthenticated sessions, recipients per transaction, AUTH failures."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import smtplib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from mailbeacon.net.throttle import Throttle, address_key
from mailbeacon.send.smtp import SmtpHandler, start_smtp_server
from mailbeacon.send.smtp_limits import SmtpLimits
from tests.support import API_KEY, Service, SmtpRelay, free_port

# The AUTH schedule of the server, with shorter delays than the default so the test is
# quick: 0.2 s before the 2nd try, 0.4, 0.6, 0.6; the 5th failure closes.
QUICK_AUTH = SmtpLimits(auth_delay=0.2, auth_max_delay=0.6)
WRONG = "PLAIN " + base64.b64encode(b"\0api\0key-wrong").decode()
RIGHT = "PLAIN " + base64.b64encode(b"\0api\0" + API_KEY.encode()).decode()
OTHER_ADDRESS = "127.0.0.2"  # loopback too, another client address for the server


@pytest.fixture
async def smtp_service(service_factory: Callable[..., Any],
                       smtp_relay: SmtpRelay) -> AsyncIterator[tuple[Service, int]]:
    """mailbeacon's SMTP server as `serve` starts it, with 3 sessions per address."""
    port = free_port()
    async with service_factory(relay=smtp_relay.url, smtp=f"127.0.0.1:{port}",
                               smtp_sessions_per_ip=3) as svc:
        await svc.add_domain("example.com")
        yield svc, port


@pytest.fixture
async def quick_auth_server(service_factory: Callable[..., Any]
                            ) -> AsyncIterator[tuple[int, Any]]:
    """An SMTP server of a running mailbeacon with the QUICK_AUTH limits; its port and
    the mailbeacon's runtime."""
    async with service_factory() as svc:
        runtime = svc.runtime
        handler = SmtpHandler(runtime.db, runtime.intake, runtime.inbound)
        server = await start_smtp_server("127.0.0.1", 0, handler, runtime.keys, 200_000, None,
                                         limits=QUICK_AUTH)
        try:
            yield int(server.sockets[0].getsockname()[1]), runtime
        finally:
            server.close()


@contextlib.contextmanager
def _client(port: int, source: str = "127.0.0.1") -> Iterator[smtplib.SMTP]:
    client = smtplib.SMTP("127.0.0.1", port, timeout=20, source_address=(source, 0))
    try:
        client.ehlo()
        yield client
    finally:
        client.close()


def _connect(port: int, source: str = "127.0.0.1") -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", port, timeout=20, source_address=(source, 0))


# --- sessions ----------------------------------------------------------------------------


async def test_unauthenticated_sessions_per_address(smtp_service: tuple[Service, int]) -> None:
    _, port = smtp_service

    def scenario() -> None:
        held = [_connect(port) for _ in range(3)]  # greeted 220: smtplib raises otherwise
        try:
            with pytest.raises(smtplib.SMTPConnectError) as refused:
                _connect(port)
            assert refused.value.smtp_code == 421
            assert b"Too many unauthenticated sessions" in refused.value.smtp_error
            _connect(port, OTHER_ADDRESS).quit()  # another address has its own count
            # A session that authenticates stops counting: room for one more.
            held[0].ehlo()
            held[0].login("api", API_KEY)
            held.append(_connect(port))
            # And a session that ends frees its place.
            held.pop(1).quit()
            held.append(_connect(port))
            with pytest.raises(smtplib.SMTPConnectError):
                _connect(port)
        finally:
            for client in held:
                client.close()

    await asyncio.to_thread(scenario)


# --- recipients ---------------------------------------------------------------------------


async def test_recipients_per_transaction_without_auth(smtp_service: tuple[Service, int]) -> None:
    service, port = smtp_service
    (bounce_domain, *_) = await asyncio.to_thread(service.runtime.inbound.bounce_domains)

    def scenario() -> list[int]:
        with _client(port) as client:
            client.mail("")
            codes = [client.rcpt(f"bounce+{i}@{bounce_domain}")[0] for i in range(101)]
            code, reply = client.rcpt(f"bounce+x@{bounce_domain}")
            assert b"4.5.3 Too many recipients" in reply
            client.rset()  # a new transaction takes recipients again
            client.mail("")
            codes.append(code)
            codes.append(client.rcpt(f"bounce+y@{bounce_domain}")[0])
            return codes

    codes = await asyncio.to_thread(scenario)
    assert codes == [250] * 100 + [452, 452, 250]


# --- AUTH ---------------------------------------------------------------------------------


async def test_auth_failures_are_slowed_then_the_connection_is_dropped(
        quick_auth_server: tuple[int, Any]) -> None:
    port, _ = quick_auth_server

    def scenario() -> tuple[list[int], float]:
        with _client(port) as client:
            started = time.monotonic()
            codes = [client.docmd("AUTH", WRONG)[0] for _ in range(5)]
            elapsed = time.monotonic() - started
            code, reply = client.getreply()  # sent unasked: the server is closing
            assert b"Too many failed authentication attempts" in reply
            codes.append(code)
            with pytest.raises(smtplib.SMTPServerDisconnected):
                client.getreply()
        # A new connection from the address gets no more tries, not even with a right key.
        with _client(port) as client:
            codes.append(client.docmd("AUTH", RIGHT)[0])
            with pytest.raises(smtplib.SMTPServerDisconnected):
                client.docmd("NOOP")
        # Another address is not locked out by this one.
        with _client(port, OTHER_ADDRESS) as client:
            codes.append(client.docmd("AUTH", RIGHT)[0])
        return codes, elapsed

    codes, elapsed = await asyncio.to_thread(scenario)
    assert codes == [535] * 5 + [421, 421, 235]
    assert elapsed >= 0.2 + 0.4 + 0.6 + 0.6  # each try after a failure waited its delay


async def test_a_right_key_is_not_counted_and_keys_are_checked_off_the_loop(
        quick_auth_server: tuple[int, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    port, runtime = quick_auth_server
    checked_on: list[int] = []
    real_check = runtime.keys.is_valid

    def recorded_check(key: str) -> bool:
        checked_on.append(threading.get_ident())
        return bool(real_check(key))

    monkeypatch.setattr(runtime.keys, "is_valid", recorded_check)

    def scenario() -> list[int]:
        codes = []
        for _ in range(6):  # more successes than the failure limit
            with _client(port) as client:
                codes.append(client.docmd("AUTH", RIGHT)[0])
        with _client(port) as client:
            codes += [client.docmd("AUTH", WRONG)[0] for _ in range(4)]
            codes.append(client.docmd("AUTH", RIGHT)[0])  # the 5th try, and right
        return codes

    assert await asyncio.to_thread(scenario) == [235] * 6 + [535] * 4 + [235]
    assert len(checked_on) == 11
    assert threading.get_ident() not in checked_on  # the key lookup may query the database


def test_default_auth_schedule() -> None:
    """The default: 0.5 s before the 2nd try, doubling to 4 s; 5 failures in 10 minutes
    close the connection."""
    throttle, checks = Throttle(), [(SmtpLimits().auth_limit, "192.0.2.1")]
    waits, now = [], 0.0
    for _ in range(5):
        waits.append(throttle.retry_after(checks, now))
        now += waits[-1]
        assert throttle.begin(checks, now) == 0
    assert waits == [0, 0.5, 1, 2, 4]
    assert throttle.exhausted(checks, now)
    assert not throttle.exhausted(checks, 600.0)  # the first left the window


def test_address_keys() -> None:
    assert address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::9") \
        == "2001:db8:1:2::/64"
    assert address_key("unknown") == "unknown"


def test_sessions_setting_is_checked() -> None:
    from mailbeacon.errors import ConfigError
    from mailbeacon.settings import load

    assert load(environ={"MAILBEACON_SMTP_SESSIONS_PER_IP": "25"}).smtp_sessions_per_ip == 25
    with pytest.raises(ConfigError, match="MAILBEACON_SMTP_SESSIONS_PER_IP"):
        load(environ={"MAILBEACON_SMTP_SESSIONS_PER_IP": "0"})

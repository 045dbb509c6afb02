"""What one client address may do with the SMTP server (aiosmtpd, see send/smtp.py).

- Unauthenticated sessions: at most `sessions_per_ip` open at once per address (an IPv6
  address counts by its /64). The session over the limit is greeted with `421` and
  closed. A session stops counting once it authenticates, so apps submitting through
  many connections are only counted for the moment before their AUTH.
- Recipients: without AUTH (returning mail), 100 per transaction (the 100 that
  RFC 5321 4.5.3.1.8 asks a server to accept); with AUTH, a message's 1,000. The one
  over gets `452 4.5.3` (RFC 5321 4.5.3.1.10) and the client sends the rest in another
  transaction.
- AUTH: every attempt is counted per address before the key is checked (a success takes
  it back). After a failure the next attempt waits `auth_delay` seconds, doubling with
  each failure up to `auth_max_delay`; at `auth_failures` failures within `auth_window`
  seconds the connection gets `421` and is closed, and AUTH from that address answers
  `421` until the oldest failure leaves the window.

Counted in each process: each SMTP server limits its own clients.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult

from mailbeacon.net.throttle import Limit, Throttle, address_key

log = logging.getLogger("mailbeacon.smtp")

SESSIONS_PER_IP = 10  # the default of MAILBEACON_SMTP_SESSIONS_PER_IP
RETURNING_MAIL_RECIPIENTS = 100  # per transaction without AUTH


@dataclass(frozen=True)
class SmtpLimits:
    sessions_per_ip: int = SESSIONS_PER_IP
    auth_failures: int = 5
    auth_window: float = 600.0
    auth_delay: float = 0.5
    auth_max_delay: float = 4.0

    @property
    def auth_limit(self) -> Limit:
        return Limit("smtp-auth", attempts=self.auth_failures, window=self.auth_window,
                     free=1, delay=self.auth_delay, max_delay=self.auth_max_delay)


class SessionCounter:
    """Unauthenticated sessions open per client address (used on the event loop only)."""

    def __init__(self, per_address: int) -> None:
        self.per_address = per_address
        self._open: dict[str, int] = {}

    def open(self, address: str) -> bool:
        """Count a session for the address, or False when it already has its limit."""
        count = self._open.get(address, 0)
        if count >= self.per_address:
            return False
        self._open[address] = count + 1
        return True

    def close(self, address: str) -> None:
        count = self._open.get(address, 0) - 1
        if count > 0:
            self._open[address] = count
        else:
            self._open.pop(address, None)


class Guards:
    """The counters one SMTP server's sessions share."""

    def __init__(self, limits: SmtpLimits) -> None:
        self.limits = limits
        self.sessions = SessionCounter(limits.sessions_per_ip)
        self.auth = Throttle()
        self.auth_limit = limits.auth_limit


# What `_authenticate` returns while the check waits to run on a thread (see below).
_DEFERRED = AuthResult(success=False, handled=True)

_TOO_MANY_SESSIONS = (b"421 4.7.0 Too many unauthenticated sessions from your address; "
                      b"try again later\r\n")
_TOO_MANY_FAILURES = ("421 4.7.0 Too many failed authentication attempts from your address;"
                      " closing connection")


class LimitedSMTP(SMTP):
    """aiosmtpd's SMTP session with the per-address limits above."""

    def __init__(self, handler: Any, guards: Guards, **options: Any) -> None:
        super().__init__(handler, **options)
        self._guards = guards
        self._address = ""  # the client's key while it holds an unauthenticated slot
        self._refused = False
        self._presented: tuple[str, Any] = ("", None)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._original_transport is None:  # a new connection, not the STARTTLS upgrade
            peer = transport.get_extra_info("peername")
            address = address_key(str(peer[0]) if peer else "unknown")
            if not self._guards.sessions.open(address):
                log.info("refused an SMTP session from %s: %d unauthenticated sessions open",
                         address, self._guards.sessions.per_address)
                self._refused = True
                assert isinstance(transport, asyncio.WriteTransport)
                transport.write(_TOO_MANY_SESSIONS)
                transport.close()
                return
            self._address = address
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:  # the session never started
            return
        self._release()
        super().connection_lost(error)

    def _release(self) -> None:
        if self._address:
            self._guards.sessions.close(self._address)
            self._address = ""

    def _client(self) -> str:
        peer = self.session.peer if self.session is not None else None
        return address_key(str(peer[0]) if isinstance(peer, tuple) and peer else "unknown")

    async def smtp_AUTH(self, arg: str) -> None:
        if self.session is None or self.session.authenticated:
            await super().smtp_AUTH(arg)  # answers "503 Already authenticated"
            return
        throttle = self._guards.auth
        checks = [(self._guards.auth_limit, self._client())]
        while True:
            if throttle.exhausted(checks):
                await self._goodbye(_TOO_MANY_FAILURES)
                return
            began = time.monotonic()
            wait = throttle.begin(checks, began)
            if wait == 0:
                break
            await asyncio.sleep(wait)  # slows guessing; the client waits for its answer
            if self.transport is None:
                return
        await super().smtp_AUTH(arg)
        if self.session.authenticated:
            throttle.succeeded(checks, began)
            self._release()  # an authenticated session no longer counts
        elif throttle.exhausted(checks):
            log.warning("SMTP AUTH from %s failed %d times: closing", checks[0][1],
                        self._guards.auth_limit.attempts)
            await self._goodbye(_TOO_MANY_FAILURES)

    # aiosmtpd calls the authenticator synchronously, from inside its AUTH mechanisms, on
    # the event loop; the key check may query the database. So the call only records what
    # was presented, and each mechanism then runs the real check on a thread.
    def _authenticate(self, mechanism: str, auth_data: Any) -> AuthResult:
        self._presented = (mechanism, auth_data)
        return _DEFERRED

    async def _checked(self, result: AuthResult) -> AuthResult:
        if result is not _DEFERRED:  # the mechanism failed before any check (bad base64)
            return result
        mechanism, auth_data = self._presented
        checked: AuthResult = await asyncio.to_thread(super()._authenticate, mechanism,
                                                      auth_data)
        return checked

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._checked(await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._checked(await super().auth_LOGIN(_, args))

    async def _goodbye(self, reply: str) -> None:
        await self.push(reply)
        if self.transport is not None:
            self.transport.close()

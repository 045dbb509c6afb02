"""The SMTP server (aiosmtpd): submission for apps, and the door for returning mail.

- Submission: AUTH PLAIN or LOGIN with user `api` and an API key, then any recipients.
  The sending domain is the envelope sender's, and must be in the key's scope; the
  message is handled exactly like an HTTP send, steered by `X-Mailgun-*` control
  headers, which are removed.
- Returning mail (no AUTH): anything addressed to a bounce domain (bounces, complaints,
  mailto unsubscribes). Anything else without AUTH is refused: no open relay.
- Limits per client address (sessions, recipients, AUTH failures): send/smtp_limits.py.

STARTTLS is offered when a certificate is configured, and AUTH then needs TLS.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterable
from typing import Any, Protocol

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from mailbeacon.domains.apikeys import KeyChecker, SessionKey
from mailbeacon.domains.domain import Domain, get_domain
from mailbeacon.errors import BadRequest, NotFound
from mailbeacon.send.intake import IntakeWriter
from mailbeacon.send.mime import from_mime
from mailbeacon.send.outgoing import MAX_RECIPIENTS
from mailbeacon.send.smtp_limits import (
    RETURNING_MAIL_RECIPIENTS,
    Guards,
    LimitedSMTP,
    SmtpLimits,
)
from mailbeacon.storage.db import Database

log = logging.getLogger("mailbeacon.smtp")
DEFAULT_LIMITS = SmtpLimits()


class ReturningMail(Protocol):
    """Where mail arriving without AUTH goes: bounces, complaints, mailto unsubscribes
    (the runtime wires `inbound.receiver.InboundReceiver`)."""

    def accepts(self, address: str) -> bool:
        """Whether mail for `address` is ours to take without authentication (blocking)."""
        ...

    async def receive(self, data: bytes, recipients: Iterable[str] = (),
                      sender: str = "") -> str:
        """Act on one returning message; its status. Raises when it cannot be kept."""
        ...


class SmtpHandler:
    """aiosmtpd hooks; each returns the SMTP reply."""

    def __init__(self, db: Database, intake: IntakeWriter, inbound: ReturningMail,
                 queued: Any = lambda: None) -> None:
        self._db = db
        self._intake = intake
        self._inbound = inbound
        self._queued = queued

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        limit = MAX_RECIPIENTS if session.authenticated else RETURNING_MAIL_RECIPIENTS
        if len(envelope.rcpt_tos) >= limit:  # RFC 5321 4.5.3.1.10: the rest in a new one
            return f"452 4.5.3 Too many recipients (at most {limit} per transaction)"
        if not session.authenticated and not await asyncio.to_thread(
                self._inbound.accepts, address):
            return "550 5.7.1 Relaying denied: authenticate to send"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or envelope.content
        assert isinstance(data, bytes)
        if not session.authenticated:
            try:
                status = await self._inbound.receive(data, envelope.rcpt_tos,
                                                     envelope.mail_from or "")
            except Exception:  # e.g. the database is away: the sender will retry
                log.exception("could not process returning mail")
                return "451 4.3.0 Could not process the message now; try again later"
            return f"250 2.0.0 OK: {status}"
        return await self._submit(envelope.mail_from or "", envelope.rcpt_tos, data,
                                  session.auth_data)

    async def _submit(self, sender: str, recipients: list[str], data: bytes,
                      key: SessionKey | None) -> str:
        domain_name = sender.rpartition("@")[2].lower()
        # Checked again per message: a key revoked during the session stops here.
        grant = await asyncio.to_thread(key.grant) if key is not None else None
        if grant is None:
            return "550 5.7.8 The API key of this session is no longer valid"
        if not grant.may_use(domain_name):
            return (f"550 5.7.1 This API key may only send from {grant.domain}, "
                    f"not {domain_name!r}")
        try:
            domain = await asyncio.to_thread(get_domain, self._db, domain_name)
            message_id = await asyncio.to_thread(self._queue, domain, data, sender,
                                                 recipients)
        except NotFound:
            return f"550 5.7.1 Sender domain {domain_name!r} is not a mailbeacon domain"
        except BadRequest as exc:
            return f"550 5.6.0 {exc.message}"
        except Exception:  # e.g. the database is away: the client will try again
            log.exception("could not queue a submitted message")
            return "451 4.3.0 Could not queue the message now; try again later"
        self._queued()
        return f"250 2.0.0 Queued as <{message_id}>"

    def _queue(self, domain: Domain, data: bytes, sender: str,
               recipients: list[str]) -> str:
        """Check and queue one submitted message, as messages.mime does (blocking)."""
        message = from_mime(data, domain.name, recipients, sender=sender, method="smtp")
        return self._intake.accept(domain, message)


class _Authenticator:
    def __init__(self, keys: KeyChecker) -> None:
        self._keys = keys

    def __call__(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                 auth_data: Any) -> AuthResult:
        if not isinstance(auth_data, LoginPassword) or auth_data.login != b"api":
            return AuthResult(success=False, handled=False)
        try:
            secret = auth_data.password.decode("utf-8")
        except UnicodeDecodeError:
            return AuthResult(success=False, handled=False)
        valid = self._keys.is_valid(secret)
        # The session keeps the key, so each message is checked against its scope.
        return AuthResult(success=valid, handled=False,
                          auth_data=SessionKey(self._keys, secret) if valid else None)


async def start_smtp_server(host: str, port: int, handler: SmtpHandler, keys: KeyChecker,
                            max_bytes: int, tls: ssl.SSLContext | None,
                            hostname: str | None = None,
                            limits: SmtpLimits = DEFAULT_LIMITS) -> asyncio.Server:
    """Listen on host:port in the running event loop, with per-address `limits`
    (send/smtp_limits.py)."""
    loop = asyncio.get_running_loop()
    guards = Guards(limits)

    def protocol() -> SMTP:
        return LimitedSMTP(handler, guards, data_size_limit=max_bytes, enable_SMTPUTF8=True,
                           hostname=hostname, ident="mailbeacon ESMTP", tls_context=tls,
                           auth_required=False, auth_require_tls=tls is not None,
                           authenticator=_Authenticator(keys), auth_exclude_mechanism=[],
                           timeout=300)

    return await loop.create_server(protocol, host, port)


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context

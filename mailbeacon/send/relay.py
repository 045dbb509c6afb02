"""The upstream SMTP relay: where every message leaves mailbeacon (aiosmtplib).

`Relay` is a `Transport` (transport.py): `send` turns every outcome into an `Outcome`:
a 2xx is delivered, a 5xx a permanent failure, and a 4xx, timeout or connection failure
a temporary one.

International addresses: domains go out in IDNA; a non-ASCII local part needs the
relay's SMTPUTF8 (RFC 6531), and without it the delivery fails permanently (553 5.6.7).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import aiosmtplib

from mailbeacon.errors import ConfigError
from mailbeacon.model.addresses import ascii_domain, needs_smtputf8
from mailbeacon.send.transport import Outcome, Parcel

_LINE_END = re.compile(rb"\r\n|\n|\r(?!\n)")
_LEADING_DOT = re.compile(rb"(?m)^\.")
_SCHEMES = {"smtp": (25, None), "smtps": (465, "tls"), "smtp+plain": (25, "plain")}


# Our own answer, as RFC 6531 (3.7.4.1) words it, when the relay cannot take the address.
NO_SMTPUTF8 = Outcome(553, "5.6.7 Non-ASCII address, and the relay does not offer SMTPUTF8",
                      "the recipient's address has a non-ASCII local part, which needs "
                      "SMTPUTF8 (RFC 6531); the relay does not support it")


@dataclass(frozen=True)
class Relay:
    host: str
    port: int
    tls: str | None  # "tls": TLS from the start; "plain": never; None: STARTTLS if offered
    username: str | None = None
    password: str | None = None
    timeout: float = 30.0

    @classmethod
    def from_url(cls, url: str, timeout: float = 30.0) -> Relay:
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES or not parts.hostname:
            raise ConfigError("relay must be smtp://HOST[:PORT], smtps://... or smtp+plain://...")
        default_port, tls = _SCHEMES[parts.scheme]
        try:
            port = parts.port or default_port
        except ValueError as exc:
            raise ConfigError("relay port is not a number") from exc
        return cls(parts.hostname, port, tls,
                   unquote(parts.username) if parts.username else None,
                   unquote(parts.password) if parts.password else None, timeout)

    def __repr__(self) -> str:  # never show the password
        return f"Relay({self.host}:{self.port}, tls={self.tls}, user={self.username})"

    async def send(self, parcel: Parcel) -> Outcome:
        """One SMTP transaction for one recipient; never raises for SMTP or network trouble.

        `parcel.wire`: `transparent(parcel.data)`, made beforehand off the event loop; for
        a message of megabytes, making it here would hold the event loop for a tenth of a
        second."""
        message, wire = parcel.data, parcel.wire
        client = aiosmtplib.SMTP(
            hostname=self.host, port=self.port, username=self.username,
            password=self.password, use_tls=self.tls == "tls",
            start_tls=False if self.tls == "plain" else None, timeout=self.timeout,
        )
        sender, recipient = ascii_domain(parcel.sender), ascii_domain(parcel.recipient)
        utf8 = needs_smtputf8(sender) or needs_smtputf8(recipient)
        encoding, options = ("utf-8", ["SMTPUTF8"]) if utf8 else ("ascii", [])
        try:
            async with client:
                if utf8:
                    if client.is_ehlo_or_helo_needed:
                        await client.ehlo()
                    if not client.supports_extension("smtputf8"):
                        return NO_SMTPUTF8
                await client.mail(sender, options=options, encoding=encoding)
                await client.rcpt(recipient, encoding=encoding)
                reply = await (client.data(message) if wire is None
                               else _send_data(client, wire))
        except aiosmtplib.SMTPAuthenticationError as exc:
            # Our credentials are wrong, not the recipient: worth trying again once fixed.
            return Outcome(0, "", f"relay refused our login: {exc.code} {exc.message}")
        except aiosmtplib.SMTPResponseException as exc:  # MAIL, RCPT or DATA refused
            return Outcome(exc.code, exc.message)
        except aiosmtplib.SMTPException as exc:  # connect, TLS, auth, timeout, disconnect
            return Outcome(0, "", f"{type(exc).__name__}: {exc}")
        except OSError as exc:
            return Outcome(0, "", f"connection failed: {exc}")
        return Outcome(reply.code, reply.message)


def transparent(message: bytes) -> bytes:
    """The DATA payload of `message` (RFC 5321 4.5.2): CRLF line ends, a leading dot
    doubled, ending in CRLF.CRLF; what aiosmtplib's `data` makes of it."""
    payload = _LEADING_DOT.sub(b"..", _LINE_END.sub(b"\r\n", message))
    if not payload.endswith(b"\r\n"):
        payload += b"\r\n"
    return payload + b".\r\n"


async def _send_data(client: aiosmtplib.SMTP, wire: bytes) -> aiosmtplib.SMTPResponse:
    """DATA with a payload already made transparent (aiosmtplib's `data` would scan it
    again, on the event loop)."""
    start = await client.execute_command(b"DATA")
    if start.code != 354:
        raise aiosmtplib.SMTPDataError(start.code, start.message)
    protocol = client.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    protocol.write(wire)
    reply = await protocol.read_response(timeout=client.timeout)
    if reply.code != 250:
        raise aiosmtplib.SMTPDataError(reply.code, reply.message)
    return reply

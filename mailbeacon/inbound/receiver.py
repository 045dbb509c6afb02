"""Mail that comes back to mailbeacon: mailto unsubscribes, bounces and complaints.

It arrives at the bounce domains, through the SMTP server (no AUTH needed) or a polled
mailbox. Our own addresses carry a signed token in the local part:
`unsub+<token>@<bounce domain>` (List-Unsubscribe mailto) and `bounce+<token>@...`
(the VERP envelope sender of every message we relay).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from email import message_from_bytes
from email.message import Message
from email.policy import compat32
from email.utils import getaddresses

from sqlalchemy import select

from mailbeacon.errors import TokenError
from mailbeacon.storage.db import Database
from mailbeacon.storage.schema import domains
from mailbeacon.track.recorder import Hit, Recorder
from mailbeacon.track.tokens import Kind, Token, TokenCodec

log = logging.getLogger("mailbeacon.inbound")
_OURS = re.compile(r"^(bounce|unsub)\+([a-z2-7]+)@(.+)$", re.I)
# Headers that may name the address a polled mailbox received a message for.
_ADDRESS_HEADERS = ("To", "Cc", "Delivered-To", "X-Original-To", "Envelope-To")


class InboundReceiver:
    def __init__(self, db: Database, codec: TokenCodec, recorder: Recorder) -> None:
        self._db = db
        self._codec = codec
        self._recorder = recorder

    def token(self, address: str) -> Token | None:
        """The verified token of one of our addresses, or None."""
        match = _OURS.match(address.strip())
        if match is None:
            return None
        try:
            token = self._codec.decode(match.group(2))
        except TokenError:
            return None
        wanted = Kind.BOUNCE if match.group(1).lower() == "bounce" else Kind.UNSUBSCRIBE
        return token if token.kind is wanted else None

    def bounce_domains(self) -> set[str]:
        with self._db.read() as conn:
            rows = conn.execute(select(domains.c.name, domains.c.bounce_domain)).all()
        return {(r.bounce_domain or r.name).lower() for r in rows}

    def accepts(self, address: str) -> bool:
        """Whether mail for `address` is ours to take without authentication."""
        host = address.rpartition("@")[2].lower().rstrip(".")
        return host in self.bounce_domains()

    async def receive(self, data: bytes, recipients: Iterable[str] = (),
                      sender: str = "") -> None:
        """Act on one message sent to a bounce domain."""
        message = message_from_bytes(data, policy=compat32)
        addresses = [*recipients, *_header_addresses(message)]
        for address in dict.fromkeys(a.lower() for a in addresses):
            token = self.token(address)
            if token is not None and token.kind is Kind.UNSUBSCRIBE:
                await self._recorder.record(Hit(
                    Kind.UNSUBSCRIBE, token.delivery_id, time.time_ns() // 1000, "",
                    "", "MAIL", scope=token.scope))
                log.info("mailto unsubscribe for delivery %s", token.delivery_id)
                return


def _header_addresses(message: Message) -> list[str]:
    values = [str(v) for name in _ADDRESS_HEADERS for v in message.get_all(name, [])]
    return [address for _, address in getaddresses(values) if address]

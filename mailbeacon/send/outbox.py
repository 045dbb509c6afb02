"""The local outbox: where mail goes when no relay is configured (the embedded default).

It answers like a relay that accepts everything, and keeps each message so the dashboard
can show it like an inbox: open it, load its pixel, follow its links.
"""

from __future__ import annotations

import asyncio
from email import message_from_bytes
from email.policy import default

from mailbeacon.model.ids import new_id
from mailbeacon.send.relay import Outcome
from mailbeacon.storage.db import Database, now_us
from mailbeacon.storage.schema import local_outbox


class LocalOutbox:
    host = "local-outbox"

    def __init__(self, db: Database) -> None:
        self._db = db

    async def send(self, message: bytes, sender: str, recipient: str) -> Outcome:
        await asyncio.to_thread(self._store, message, sender, recipient)
        return Outcome(250, "OK: kept in the local outbox (no relay configured)")

    def _store(self, message: bytes, sender: str, recipient: str) -> None:
        headers = message_from_bytes(message.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n",
                                     policy=default)
        delivery = str(headers.get("X-Mailbeacon-Delivery", ""))
        domain = sender.rpartition("@")[2]
        with self._db.write() as conn:
            conn.execute(local_outbox.insert().values(
                id=new_id(), domain=domain, delivery_id=delivery, sender=sender,
                recipient=recipient, subject=str(headers.get("Subject", "")), data=message,
                created_at=now_us()))

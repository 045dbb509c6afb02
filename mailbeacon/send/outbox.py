"""The local outbox: where mail goes when no relay is configured (the embedded default).

A `Transport` (transport.py) that accepts everything, and keeps each message with the
delivery it carries, so the dashboard can show it like an inbox: open it, load its
pixel, follow its links.
"""

from __future__ import annotations

import asyncio
from email import message_from_bytes
from email.policy import default

from mailbeacon.model.clock import now_us
from mailbeacon.model.ids import new_id
from mailbeacon.send.transport import Outcome, Parcel
from mailbeacon.storage.db import Database
from mailbeacon.storage.schema import local_outbox


class LocalOutbox:
    host = "local-outbox"

    def __init__(self, db: Database) -> None:
        self._db = db

    async def send(self, parcel: Parcel) -> Outcome:
        await asyncio.to_thread(self._store, parcel)
        return Outcome(250, "OK: kept in the local outbox (no relay configured)")

    def _store(self, parcel: Parcel) -> None:
        head = parcel.data.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
        subject = str(message_from_bytes(head, policy=default).get("Subject", ""))
        with self._db.write() as conn:
            conn.execute(local_outbox.insert().values(
                id=new_id(), domain=parcel.sender.rpartition("@")[2],
                delivery_id=parcel.delivery_id, sender=parcel.sender,
                recipient=parcel.recipient, subject=subject, data=parcel.data,
                created_at=now_us()))

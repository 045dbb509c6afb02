"""Tying a returning report to the delivery it is about, or to nothing (DESIGN 7).

Anyone can mail the bounce door, so a report only counts when it carries something that
only the delivery's own mail carried:

- the verified VERP token of the address it came to (`bounce+<token>@...`), or
- the delivery's Message-ID (at least 96 random bits for the ones mailbeacon makes) in the
  returned original, or in a reply's In-Reply-To/References, together with the failed (or
  replying) address being a recipient of that message; where the returned original still
  has our `X-Mailbeacon-Delivery` header, it must name a delivery of that same message.

And only within the scope the report was addressed to: the domains whose bounce domain
is the host of its envelope recipient (or, from a mailbox, of its To/Delivered-To). An
address alone ties nothing.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, select

from mailbeacon.inbound.result import Result
from mailbeacon.model.ids import ID_LENGTH
from mailbeacon.storage.schema import deliveries, messages

_DELIVERY_ID = re.compile(r"^[0-9a-v]{26}$")
# References of a reply looked up (a long thread lists many).
MAX_REFERENCES = 20


@dataclass(frozen=True)
class Match:
    """The delivery a report is about, and what tied it."""

    delivery_id: str
    recipient: str
    row: Any  # the message row, with delivery_id and recipient
    how: str  # verp | header | message-id


def _deliveries(conn: Connection, where: Any) -> Sequence[Any]:
    """The newest delivery matching `where`, with its message row (at most one)."""
    return conn.execute(
        select(deliveries.c.id.label("delivery_id"), deliveries.c.recipient, messages)
        .join(messages, messages.c.id == deliveries.c.message_id)
        .where(where).order_by(deliveries.c.id.desc()).limit(1)).all()


def _match(row: Any, how: str) -> Match:
    return Match(row.delivery_id, row.recipient, row, how)


def tie(conn: Connection, result: Result, verp: Sequence[str], scope: Collection[str],
        single: bool) -> Match | None:
    """The delivery `result` is about, within the domains of `scope`, or None.

    `verp`: delivery ids of verified VERP tokens the report came to; `single`: the report
    has one finding, so a VERP token names its delivery whatever address it quotes
    (a forwarded address fails under another name).
    """
    if not scope:
        return None
    recipient = result.recipient.lower()
    in_scope = messages.c.domain.in_(sorted(scope))
    for delivery_id in verp:
        for row in _deliveries(conn, (deliveries.c.id == delivery_id) & in_scope):
            if single or not recipient or row.recipient.lower() == recipient:
                return _match(row, "verp")
    if not result.original_message_id:
        return None
    of_message = in_scope & (messages.c.message_id == result.original_message_id)
    header = result.original_headers.get("x-mailbeacon-delivery", "").strip().lower()
    if _DELIVERY_ID.match(header) and len(header) == ID_LENGTH:
        named = _deliveries(conn, of_message & (deliveries.c.id == header))
        if named and (not recipient or named[0].recipient.lower() == recipient):
            return _match(named[0], "header")
        return None  # our header names another message, or another recipient: forged
    if not recipient:
        # A redacted complaint: the Message-ID alone names the delivery only when the
        # message had one recipient.
        ids = conn.execute(select(deliveries.c.id)
                           .join(messages, messages.c.id == deliveries.c.message_id)
                           .where(of_message).limit(2)).scalars().all()
        if len(ids) != 1:
            return None
        return _match(_deliveries(conn, deliveries.c.id == ids[0])[0], "message-id")
    mine = _deliveries(conn, of_message & (func.lower(deliveries.c.recipient) == recipient))
    return _match(mine[0], "message-id") if mine else None


def reply_tie(conn: Connection, references: Sequence[str], author: str,
              scope: Collection[str]) -> Match | None:
    """The delivery a person's reply answers: one of its references is the Message-ID of
    a message of `scope` that was delivered to the reply's author."""
    if not scope or not references or not author:
        return None
    rows = _deliveries(conn, messages.c.domain.in_(sorted(scope))
                       & messages.c.message_id.in_(list(references)[-MAX_REFERENCES:])
                       & (func.lower(deliveries.c.recipient) == author.lower()))
    return _match(rows[0], "message-id") if rows else None

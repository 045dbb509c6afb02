"""What a failure does to the suppression lists, however it arrived (DESIGN 7).

One set of rules for a bounce returned by mail (inbound/receiver.py) and for the relay's
own answer in the SMTP dialogue (send/refusal.py): a hard failure suppresses the address
(with its code and error), a soft one counts toward the domain's soft-bounce limit, a
policy block is recorded and suppresses nothing. An allowlisted address is never
suppressed.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy import Connection, select

from mailbeacon.domains.domain import Domain
from mailbeacon.events.reasons import Category
from mailbeacon.storage.schema import soft_bounces
from mailbeacon.suppress import rules as suppressions
from mailbeacon.suppress.rules import SuppressionKind


class Failure(Protocol):
    """A classified failure: a returned bounce (`inbound.result.Result`) or the relay's
    refusal (`events.bounces.Verdict`)."""

    @property
    def reply_code(self) -> str: ...
    @property
    def diagnostic(self) -> str: ...
    @property
    def permanent(self) -> bool: ...
    @property
    def category(self) -> Category | None: ...


def apply_failure(conn: Connection, domain: Domain, address: str, result: Failure,
                  now: int, counts: bool) -> None:
    """Suppress or count one failure of `address`. `counts`: a soft failure that counts
    toward the limit (not a delay notice that says the remote server is still trying)."""
    code = result.reply_code or ("550" if result.permanent else "450")
    if result.category is Category.HARD and result.permanent:
        if not allowlisted(conn, domain.name, address):
            suppressions.add(conn, domain.name, SuppressionKind.BOUNCE, address, now,
                             code=code, error=result.diagnostic)
    elif result.category is Category.SOFT and counts:
        count_soft_bounce(conn, domain, address, code, result.diagnostic, now)


def allowlisted(conn: Connection, domain: str, address: str) -> bool:
    return bool(suppressions.allowlisted(conn, domain, [address]))


def count_soft_bounce(conn: Connection, domain: Domain, address: str, code: str,
                      error: str, now: int) -> None:
    """One more soft bounce; at the domain's limit the address is suppressed."""
    address = address.lower()
    row = conn.execute(select(soft_bounces.c.count).where(
        soft_bounces.c.domain == domain.name, soft_bounces.c.address == address)).first()
    count = (int(row[0]) if row else 0) + 1
    if row:
        conn.execute(soft_bounces.update().where(
            soft_bounces.c.domain == domain.name, soft_bounces.c.address == address
        ).values(count=count, last_at=now))
    else:
        conn.execute(soft_bounces.insert().values(domain=domain.name, address=address,
                                                  count=count, last_at=now))
    if count >= domain.soft_bounce_limit and not allowlisted(conn, domain.name, address):
        suppressions.add(conn, domain.name, SuppressionKind.BOUNCE, address, now, code=code,
                         error=f"{count} soft bounces (limit {domain.soft_bounce_limit}): "
                               f"{error}")

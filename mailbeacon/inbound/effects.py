"""What a failure does to the suppression lists, however it arrived (DESIGN 7).

One set of rules for a bounce returned by mail and for the relay's own answer in the SMTP
dialogue: a hard failure suppresses the address (with its code and error), a soft one
counts toward the domain's soft-bounce limit, a policy block is recorded and suppresses
nothing. An allowlisted address is never suppressed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from mailbeacon.domains.domain import Domain
from mailbeacon.events.reasons import Category
from mailbeacon.inbound.bounce import Evidence, bounce_result
from mailbeacon.inbound.result import Result
from mailbeacon.insight.activity import mark_bounced
from mailbeacon.storage.schema import soft_bounces
from mailbeacon.suppress import rules as suppressions
from mailbeacon.suppress.rules import SuppressionKind


def relay_answer(code: int, message: str, recipient: str) -> Result:
    """The relay's refusal (`550 5.1.1 user unknown`), classified like a returned bounce.

    The relay answers during the transaction with this recipient, so a "user unknown"
    there is believed as a RCPT answer is.
    """
    return bounce_result(Evidence(recipient=recipient, reply_code=str(code) if code else "",
                                  diagnostic=message, action="failed",
                                  context="in reply to RCPT TO command"), {})


@dataclass(frozen=True)
class RelayFailure:
    """The relay's refusal of one delivery, classified, and what it does to the lists.

    Like returned mail, it acts when the delivery has failed for good (a 5xx, or the
    give-up after `MAILBEACON_RETRY_MAX_AGE`): a hard failure suppresses, a soft one
    counts once toward the soft-bounce limit, a policy block does neither. A 4xx that is
    retried counts nothing yet, as a delay notice does not: greylisting answers 4xx to
    every first attempt, and a relay in trouble answers 4xx to every recipient. A
    connection failure (no SMTP answer) is never one of these.
    """

    result: Result
    final: bool  # the delivery failed for good (a 5xx, or the give-up after retries)

    @classmethod
    def of(cls, code: int, message: str, recipient: str, permanent: bool
           ) -> RelayFailure | None:
        """The failure an SMTP answer is; None for a success or no answer at all."""
        if not 400 <= code < 600:
            return None
        return cls(relay_answer(code, message, recipient), permanent)

    def gave_up(self) -> RelayFailure:
        """The same answer, as the last one before giving up (MAILBEACON_RETRY_MAX_AGE)."""
        return RelayFailure(self.result, True)

    def status_fields(self) -> dict[str, Any]:
        """What the `failed` event's delivery-status says of the classification."""
        return {"enhanced-code": self.result.status,
                "bounce-category": str(self.result.category or ""),
                "bounce-reason": self.result.reason}

    def apply(self, conn: Connection, delivery_id: str, domain: Domain, address: str,
              now: int) -> None:
        if self.final:
            mark_bounced(conn, delivery_id, domain.name, address)
            apply_failure(conn, domain, address, self.result, now, counts=True)


def apply_failure(conn: Connection, domain: Domain, address: str, result: Result,
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

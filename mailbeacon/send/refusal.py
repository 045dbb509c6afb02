"""The relay's refusal of one delivery: classified like a returned bounce, and what it
does to the address (DESIGN 7): the same rules as returned mail (suppress/effects.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from mailbeacon.domains.domain import Domain
from mailbeacon.events.bounces import Verdict, relay_answer
from mailbeacon.insight.activity import mark_bounced
from mailbeacon.suppress.effects import apply_failure


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

    verdict: Verdict
    final: bool  # the delivery failed for good (a 5xx, or the give-up after retries)

    @classmethod
    def of(cls, code: int, message: str, permanent: bool) -> RelayFailure | None:
        """The failure an SMTP answer is; None for a success or no answer at all."""
        if not 400 <= code < 600:
            return None
        return cls(relay_answer(code, message), permanent)

    def gave_up(self) -> RelayFailure:
        """The same answer, as the last one before giving up (MAILBEACON_RETRY_MAX_AGE)."""
        return RelayFailure(self.verdict, True)

    def status_fields(self) -> dict[str, Any]:
        """What the `failed` event's delivery-status says of the classification."""
        return {"enhanced-code": self.verdict.status,
                "bounce-category": str(self.verdict.category or ""),
                "bounce-reason": self.verdict.reason}

    def apply(self, conn: Connection, delivery_id: str, domain: Domain, address: str,
              now: int) -> None:
        if self.final:
            mark_bounced(conn, delivery_id, domain.name, address)
            apply_failure(conn, domain, address, self.verdict, now, counts=True)

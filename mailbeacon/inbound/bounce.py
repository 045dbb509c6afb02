"""A bounce `Result` from the evidence for one failed recipient.

Every bounce reader (standard DSN, plain-text bounce, provider JSON) ends here; the rules
themselves (codes, permanence, reason, category) are `events.bounces.classify`, shared
with the delivery worker's reading of the relay's own refusals.
"""

from __future__ import annotations

from mailbeacon.events.bounces import Evidence, classify
from mailbeacon.inbound.result import Kind, Result, kept_headers, message_id


def bounce_result(evidence: Evidence, original: dict[str, str]) -> Result:
    """A bounce `Result` from one recipient's evidence and the returned original's headers."""
    verdict = classify(evidence)
    return Result(
        kind=Kind.BOUNCE,
        recipient=evidence.recipient.lower(),
        status=verdict.status,
        reply_code=verdict.reply_code,
        diagnostic=verdict.diagnostic,
        remote_mta=evidence.remote_mta,
        action=verdict.action,
        permanent=verdict.permanent,
        hard=verdict.hard,
        category=verdict.category,
        reason=verdict.reason,
        original_message_id=message_id(original.get("message-id", "")),
        original_headers=kept_headers(original),
    )

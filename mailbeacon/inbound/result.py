"""What the parser says about one report: the `Kind` of message and one `Result` per finding.

Kept apart from `parser.py` so the format readers (DSN, ARF, text bounces, auto-replies)
can build results without importing the parser; `parser.py` re-exports both names.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from mailbeacon.events.reasons import Category

# Headers of the returned original worth keeping: our own delivery token first, then the
# ones a Mailgun-style sender or a human would match on.
ORIGINAL_HEADERS = ("x-mailbeacon-delivery", "x-mailgun-variables", "message-id", "from", "to",
                    "subject")


class Kind(enum.StrEnum):
    """What a received message is."""

    BOUNCE = "bounce"  # a delivery status notification (failure, delay, or success DSN)
    COMPLAINT = "complaint"  # a feedback-loop report (ARF) or an unsubscribe request
    AUTO_REPLY = "auto-reply"  # an RFC 3834 automatic response (vacation, out of office)
    NOT_A_REPORT = "not-a-report"  # anything else


@dataclass(frozen=True)
class Result:
    """One finding of a report: one bounced recipient, one complaint, or one auto-reply."""

    kind: Kind
    recipient: str = ""  # failed / complaining address, lower-cased; "" if unknown
    status: str = ""  # enhanced status code "5.1.1"; "" if none
    reply_code: str = ""  # SMTP reply code "550"; "" if none
    diagnostic: str = ""  # diagnostic text, one line, trimmed, at most 1000 characters
    remote_mta: str = ""
    action: str = ""  # DSN Action: failed | delayed | delivered | relayed | expanded
    permanent: bool = False  # will not succeed later (5xx, or failed with 5.x.x)
    hard: bool = False  # permanent address failure: suppress the address
    category: Category | None = None  # bounces only
    reason: str = ""  # a `Reason` value
    feedback_type: str = ""  # complaints: abuse | fraud | virus | other | opt-out | ...
    reporter: str = ""  # complaints: User-Agent, Reported-Domain or From of the report
    original_message_id: str = ""  # Message-ID of the returned original, without <>
    original_headers: dict[str, str] = field(default_factory=dict)  # see ORIGINAL_HEADERS

    def to_json(self) -> dict[str, object]:
        """The fields of one CLI output line (the caller adds "file")."""
        return {
            "kind": self.kind.value,
            "recipient": self.recipient,
            "status": self.status,
            "reply_code": self.reply_code,
            "hard": self.hard,
            "category": self.category.value if self.category is not None else None,
            "reason": self.reason,
            "feedback_type": self.feedback_type,
            "diagnostic": self.diagnostic,
            "remote_mta": self.remote_mta,
            "permanent": self.permanent,
        }


def kept_headers(original: dict[str, str]) -> dict[str, str]:
    """The subset of the original's headers that a `Result` carries."""
    return {name: original[name] for name in ORIGINAL_HEADERS if original.get(name)}


def message_id(value: str) -> str:
    """A Message-ID without angle brackets or surrounding text."""
    value = value.strip()
    start, end = value.find("<"), value.find(">")
    if 0 <= start < end:
        return value[start + 1 : end].strip()
    return value.split()[0] if value.split() else ""

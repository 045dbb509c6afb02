"""Classifying one failed recipient: its `Evidence` in, a `Verdict` out (no I/O).

Every bounce reader (standard DSN, plain-text bounce, provider JSON: inbound/) and the
relay's own refusal in the SMTP dialogue (`relay_answer`, for the delivery worker) end
here, so the rules for the enhanced code, permanence, reason and category live in one
place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from mailbeacon.events.codes import find_codes, one_line, smtp_command
from mailbeacon.events.reasons import (
    Category,
    Reason,
    category_for,
    decide_reason,
    definitely_unknown,
    reason_from_text,
    status_detail,
)

# Wording of a bounce that will be retried, when no code says so.
_TEMPORARY = re.compile(
    r"temporar(?:y|ily) (?:error|failure|problem)|will (?:be )?retr(?:y|ied)|still (?:be )?"
    r"(?:trying|retrying)|has not yet been delivered|not yet delivered|delivery (?:is )?delayed|"
    r"\bdelayed\b|this is (?:only )?a warning|you do not need to (?:take any action|resend)",
    re.IGNORECASE,
)
# Enhanced codes about the destination mailbox: with these, "user unknown" is believed.
MAILBOX_STATUSES = frozenset({"1.0", "1.1", "1.3", "1.4", "1.10", "1.351"})
MAX_CONTEXT = 4000  # characters of surrounding text considered for the reason


@dataclass
class Evidence:
    """What a reader found about one recipient."""

    recipient: str = ""
    status: str = ""
    reply_code: str = ""
    diagnostic: str = ""  # the remote server's words, or the bounce's own
    diagnostic_type: str = ""  # DSN Diagnostic-Code type: smtp, x-unix, ...
    remote_mta: str = ""
    action: str = ""
    context: str = ""  # nearby notification text, for when the diagnostic says little


def is_permanent(evidence: Evidence) -> bool:
    """Will this never succeed? Codes decide; without them, the action and the wording."""
    if evidence.action in ("delayed", "delivered", "relayed", "expanded"):
        return False
    if evidence.status:
        return evidence.status[0] == "5"
    if evidence.reply_code:
        return evidence.reply_code[0] == "5"
    if evidence.action == "failed":
        return True
    return not _TEMPORARY.search(evidence.diagnostic + " " + evidence.context[:MAX_CONTEXT])


def _mailbox_rejected(status: str, text: str, evidence: Evidence) -> bool:
    """Is a "user unknown" credible? Only with a mailbox status code or when the server said it
    in answer to RCPT TO; after DATA (or at an unknown step) it is a filter speaking, and
    suppressing the address on it would be wrong (Sisimai calls this "filtered").
    """
    if status_detail(status) in MAILBOX_STATUSES:
        return True
    context = f"{text}\n{evidence.context[:MAX_CONTEXT]}"
    return definitely_unknown(context) or smtp_command(context) == "RCPT"


def _action(evidence: Evidence, permanent: bool) -> str:
    """The DSN-style action of a bounce that did not state one."""
    if permanent:
        return "failed"
    will_retry = _TEMPORARY.search(f"{evidence.diagnostic} {evidence.context[:MAX_CONTEXT]}")
    return "delayed" if will_retry else "failed"


@dataclass(frozen=True)
class Verdict:
    """What one failure is: its codes, permanence, category and reason."""

    status: str  # enhanced status code "5.1.1"; "" if none
    reply_code: str  # SMTP reply code "550"; "" if none
    diagnostic: str  # the remote server's words, one line, at most 1000 characters
    action: str  # DSN Action: failed | delayed | delivered | relayed | expanded
    permanent: bool  # will not succeed later
    category: Category | None
    reason: str  # a `Reason` value

    @property
    def hard(self) -> bool:
        """A permanent address failure: the address is to be suppressed."""
        return self.category is Category.HARD


def classify(evidence: Evidence) -> Verdict:
    """The verdict on one recipient's evidence."""
    diagnostic = one_line(evidence.diagnostic)
    status, reply_code = evidence.status, evidence.reply_code
    found_code, found_status, _ = find_codes(diagnostic)
    if found_status and (evidence.action != "delivered" or not status):
        # The remote server's own code ("550 5.7.1 ...") beats the reporting MTA's summary
        # ("Status: 5.1.1", "Status: 5.0.0"), which is often generic or plainly wrong.
        status = found_status
    reply_code = reply_code or found_code
    evidence = replace(evidence, status=status, reply_code=reply_code)
    if evidence.action == "delivered" or status.startswith("2."):
        reason = Reason.DELIVERED
    else:
        text = diagnostic
        if evidence.diagnostic_type.startswith("x-unix"):
            text = f"x-unix; {text}"
        if reason_from_text(text) is None and evidence.context:
            text = f"{text}\n{one_line(evidence.context, MAX_CONTEXT)}"
        reason = decide_reason(status, reply_code, text)
        if reason is Reason.USER_UNKNOWN and not _mailbox_rejected(status, text, evidence):
            reason = Reason.FILTERED
    permanent = is_permanent(evidence) and reason is not Reason.DELIVERED
    return Verdict(status=status, reply_code=reply_code, diagnostic=diagnostic,
                   action=evidence.action or _action(evidence, permanent),
                   permanent=permanent, category=category_for(reason, permanent),
                   reason=reason.value)


def relay_answer(code: int, message: str) -> Verdict:
    """The relay's refusal (`550 5.1.1 user unknown`), classified like a returned bounce.

    The relay answers during the transaction with this recipient, so a "user unknown"
    there is believed as a RCPT answer is.
    """
    return classify(Evidence(reply_code=str(code) if code else "", diagnostic=message,
                             action="failed", context="in reply to RCPT TO command"))

"""Turning the evidence for one failed recipient into a bounce `Result`.

Every bounce reader (standard DSN, plain-text bounce, provider JSON) ends here, so the rules
for the enhanced code, permanence, reason and category live in one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from mailbeacon.events.reasons import (
    Category,
    Reason,
    category_for,
    decide_reason,
    definitely_unknown,
    reason_from_text,
    status_detail,
)
from mailbeacon.inbound.codes import find_codes, one_line, smtp_command
from mailbeacon.inbound.result import Kind, Result, kept_headers, message_id

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


def bounce_result(evidence: Evidence, original: dict[str, str]) -> Result:
    """A bounce `Result` from one recipient's evidence and the returned original's headers."""
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
    category = category_for(reason, permanent)
    return Result(
        kind=Kind.BOUNCE,
        recipient=evidence.recipient.lower(),
        status=status,
        reply_code=reply_code,
        diagnostic=diagnostic,
        remote_mta=evidence.remote_mta,
        action=evidence.action or _action(evidence, permanent),
        permanent=permanent,
        hard=category is Category.HARD,
        category=category,
        reason=reason.value,
        original_message_id=message_id(original.get("message-id", "")),
        original_headers=kept_headers(original),
    )

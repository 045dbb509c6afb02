"""Bounces that are not RFC 3464 reports: qmail, Exim, old Sendmail, Exchange, provider texts.

Whether a message is a bounce at all is decided by signals (tables below): who sent it,
its subject, MTA boilerplate in the body, SMTP codes. The failed addresses come from
flufl.bounce, which knows many legacy layouts, and otherwise from addresses standing where
bounce texts put the recipient. The diagnostic is the SMTP reply nearest to each address.
"""

from __future__ import annotations

import logging
import re
from email.message import Message

from flufl.bounce import all_failures

from mailbeacon.inbound.bounce import Evidence
from mailbeacon.inbound.codes import (
    ADDRESS,
    addresses,
    find_codes,
    one_line,
    position,
    response_at,
)
from mailbeacon.inbound.message import Mail

# flufl.bounce logs a traceback before re-raising a detector's exception; we catch the
# exception ourselves, so the log line would only be noise on the console.
logging.getLogger("flufl.bounce").addHandler(logging.NullHandler())
logging.getLogger("flufl.bounce").propagate = False

# Local parts and display names of the software that sends bounces.
BOUNCE_SENDERS = re.compile(
    r"^(?:mailer[-_.]?daemon|mail[-_.]?daemon|postmaster|post_master|mail\.delivery\.system|"
    r"mdaemon|nobody|bounces?|returns?|ndr|mail\.?agent)@",
    re.IGNORECASE,
)
BOUNCE_SENDER_NAMES = re.compile(
    r"mail delivery (?:system|subsystem|service)|mailer[- ]daemon|postmaster|"
    r"mail (?:deliver|delivery) system|system administrator|mail administrator",
    re.IGNORECASE,
)
BOUNCE_SUBJECTS = re.compile(
    r"undeliver|delivery (?:status notification|failure|failed|problem|notification|has failed|"
    r"report|error|unsuccessful|delay)|failure notice|fail(?:ed|ure) delivery|returned mail|"
    r"returned to sender|return(?:ed)? message|mail delivery (?:failed|failure|system|problem)|"
    r"non[- ]?deliver|could not (?:be )?deliver|not delivered|unable to deliver|"
    r"mail (?:system )?error|system error|\bbounced?\b|\brejected\b|error sending|"
    r"warning: (?:could not|message)|delayed mail|mail failure|message (?:not delivered|"
    r"delivery failure|blocked)|could not send|permanent error|\bndn\b|\bndr\b|"
    r"there was an error|problem delivering|delivery notification|mail failed|"
    r"returning (?:message )?to sender|"
    r"配信|送信できません|エラー|不達|未達|mail failure",
    re.IGNORECASE,
)
# Mailing-list software returning a post (fml, ezmlm, Mailman): a header that marks list
# software, and a subject that says the post was refused.
LIST_HEADERS = ("x-mlserver", "x-ml-name", "mailing-list", "list-id", "x-mailman-version")
LIST_REFUSALS = re.compile(
    r"(?:are|is) not (?:a )?member|not a member|loop alert|post(?:ing)? (?:rejected|denied|refused)|"
    r"message (?:rejected|refused)|not allowed to post",
    re.IGNORECASE,
)
# Boilerplate that only mail software writes when it returns a message.
STRONG_MARKERS = re.compile(
    r"created automatically by mail delivery software|"
    r"(?:i'm|i am) afraid i (?:wasn't|was not) able to deliver|qmail-send program|"
    r"transcript of session follows|this is the mail system at host|the mail system\s*$|"
    r"(?:did not|didn't) reach the following recipient|"
    r"delivery (?:to the following recipients? (?:failed|has been delayed|was unsuccessful)|"
    r"has failed to these recipients)|"
    r"the following (?:address(?:es|\(es\))?|recipients?(?:\(s\))?) (?:failed|had (?:permanent "
    r"fatal |delivery )?(?:errors|problems)|could not be reached)|"
    r"could not be delivered to (?:one or more|the following)|"
    r"smtp error from remote (?:mail )?server|remote host said|there was an error delivering|"
    r"we had trouble delivering your message|your message (?:wasn't|was not|couldn't be) "
    r"delivered|mail delivery (?:failed|has failed)|non-?delivery (?:report|notification)|"
    r"(?:unable|failed) to deliver (?:your )?(?:message|mail) to|"
    r"an error occurred while trying to deliver|message (?:could not|couldn't) be delivered|"
    r"delivery status notification|undeliverable (?:message|mail)|"
    r"following recipients? (?:was|were) rejected|each of the following recipients|"
    r"failed addresses follow|"
    r"a message that you sent (?:could not|has not|contained)|"
    r"送信できませんでした|配信できませんでした|届きませんでした|宛先.{0,10}エラー",
    re.IGNORECASE | re.MULTILINE,
)
WEAK_MARKERS = re.compile(
    r"permanent (?:fatal )?error|your (?:message|e-?mail|mail) (?:was|has been) (?:rejected|"
    r"blocked|returned|bounced)|error (?:sending|delivering)|returned (?:mail|message)|"
    r"could not (?:be )?deliver|undeliverable|delivery (?:failure|failed)",
    re.IGNORECASE,
)
# Where bounce texts put the failed address: alone on a line (maybe in <>, after a bullet),
# after "RCPT TO:", or after "to"/"recipient:" phrases.
_RECIPIENT_CONTEXT = (
    re.compile(r"^[ \t>*•-]*<?\"?(" + ADDRESS.pattern + r")\"?>?[ \t]*(?:[:.]|\[|\(|on |$|<)",
               re.MULTILINE),
    re.compile(r"rcpt to:?\s*<?(" + ADDRESS.pattern + r")", re.IGNORECASE),
    re.compile(r"(?:delivered|deliver(?:ing)?|sent|mail(?:ing)?|message) to:?\s*<?\"?("
               + ADDRESS.pattern + r")", re.IGNORECASE),
    re.compile(r"\b(?:recipients?|addresse?s?|addressee|user|account|mailbox)(?:\(e?s\))?:?\s*"
               r"<?\"?(" + ADDRESS.pattern + r")", re.IGNORECASE),
    re.compile(r"<(" + ADDRESS.pattern + r")>\.\.\."),
)
_SENDER_CONTEXT = re.compile(r"(?:mail from:?|envelope-from|from:|sender:?|return-path:)\s*<?("
                             + ADDRESS.pattern + r")", re.IGNORECASE)
_NOT_RECIPIENTS = re.compile(r"^(?:mailer-daemon|mailer_daemon|mailerdaemon)@", re.IGNORECASE)
MAX_RECIPIENTS = 100


def bounce_signals(mail: Mail) -> tuple[bool, bool]:
    """(looks like a bounce at all, has strong machine evidence) for a non-DSN message."""
    sender = mail.headers.get("from", "")
    sender_address = (ADDRESS.search(sender) or ADDRESS.search("x@x.x"))
    by_sender = bool(
        BOUNCE_SENDERS.match(sender_address.group(0) if sender_address else "")
        or BOUNCE_SENDER_NAMES.search(sender)
        or mail.headers.get("return-path", "x").strip() in ("<>", "")
    )
    subject = mail.headers.get("subject", "")
    text = mail.text[:200_000]
    strong = bool(STRONG_MARKERS.search(text))
    code, status, _ = find_codes(text)
    # Structure only mail software produces: a delivery-status report type, or the
    # X-Failed-Recipients header of Exim and Gmail.
    structural = mail.report_type == "delivery-status" or bool(failed_header(mail))
    strong = strong or structural
    by_text = strong or bool(WEAK_MARKERS.search(text))
    list_refusal = any(h in mail.headers for h in LIST_HEADERS) and bool(
        LIST_REFUSALS.search(subject))
    is_bounce = strong or list_refusal or bool(BOUNCE_SUBJECTS.search(subject)) or (
        by_sender and (by_text or bool(code or status)))
    return is_bounce, strong or bool(code or status)


def failed_header(mail: Mail) -> list[str]:
    """Addresses in X-Failed-Recipients headers (Exim, Gmail): the MTA's own list."""
    found: list[str] = []
    for name, value in mail.all_headers:
        if name == "x-failed-recipients":
            found.extend(addresses(value))
    return list(dict.fromkeys(found))


def sender_addresses(mail: Mail) -> set[str]:
    """Addresses that belong to the sending side (us), never to a failed recipient."""
    found: set[str] = set()
    for name in ("from", "to", "return-path", "sender", "reply-to"):
        found.update(addresses(mail.headers.get(name, "")))
    for name in ("from", "return-path", "sender", "reply-to"):
        found.update(addresses(mail.original.get(name, "")))
    return found


def _flufl_addresses(message: Message | None) -> list[str]:
    if message is None:
        return []
    try:
        temporary, permanent = all_failures(message)
    except Exception:  # any detector may trip over a malformed message: no addresses then
        return []
    out: list[str] = []
    for raw in (*permanent, *temporary):
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        address = ADDRESS.search(text)
        if address:
            out.append(address.group(0).strip(".").lower())
    return out


def find_recipients(mail: Mail, text: str) -> list[str]:
    """Failed addresses in order of appearance in the notification text."""
    excluded = sender_addresses(mail)
    lowered = text.lower()
    excluded.update(m.group(1).lower() for m in _SENDER_CONTEXT.finditer(text))
    failed = [a for a in failed_header(mail) if a not in excluded]
    if failed:
        return sorted(failed, key=lambda a: (position(text, a) < 0, position(text, a)))
    flufl = [a for a in dict.fromkeys(_flufl_addresses(mail.message)) if a not in excluded]
    in_text = [a for a in flufl if position(lowered, a) >= 0]
    if in_text:
        return sorted(in_text, key=lambda a: position(lowered, a))[:MAX_RECIPIENTS]
    in_context: dict[str, int] = {}
    for pattern in _RECIPIENT_CONTEXT:
        for m in pattern.finditer(text):
            address = m.group(1).strip(".").lower()
            if address not in excluded and not _NOT_RECIPIENTS.match(address):
                in_context.setdefault(address, m.start(1))
    if in_context:
        return sorted(in_context, key=in_context.__getitem__)[:MAX_RECIPIENTS]
    if flufl:
        return flufl[:MAX_RECIPIENTS]
    anywhere = [a for a in addresses(text) if a not in excluded and not _NOT_RECIPIENTS.match(a)]
    return anywhere[:1]


def segment(text: str, recipient: str, others: list[str]) -> str:
    """The part of `text` about `recipient`: from its first mention to the next recipient's."""
    start = position(text, recipient)
    if start < 0:
        return text
    # From the start of its line: Sendmail writes "554 <a@b>... reason", code first.
    start = text.rfind("\n", 0, start) + 1
    ends = [p for p in (position(text, o, start + len(recipient)) for o in others if o != recipient)
            if p > start]
    return text[start : min(ends)] if ends else text[start:]


def evidence_from_text(text: str, recipient: str, single: bool) -> Evidence:
    """Codes and diagnostic for one recipient from its segment (or the whole text if alone)."""
    reply_code, status, offset = find_codes(text)
    diagnostic = response_at(text, offset) if offset >= 0 else ""
    if not diagnostic:
        diagnostic = _first_statement(text, recipient)
    return Evidence(recipient=recipient, status=status, reply_code=reply_code,
                    diagnostic=diagnostic, context=text)


def _first_statement(text: str, recipient: str) -> str:
    """Without an SMTP reply, the first informative line after the address."""
    at = position(text, recipient)
    tail = text[at + len(recipient):] if at >= 0 else text
    lines = tail.splitlines()
    for index, line in enumerate(lines):
        cleaned = line.strip(" \t>:[]()<-*=_")
        if len(cleaned) >= 6 and not ADDRESS.fullmatch(cleaned) and not cleaned.endswith(":"):
            # Keep the indented lines a wrapped statement continues on.
            following = [x for x in _indented_run(lines[index + 1 : index + 6])]
            return one_line(" ".join([line, *following]))
    return ""


def _indented_run(lines: list[str]) -> list[str]:
    run: list[str] = []
    for line in lines:
        if not line.strip() or line[:1] not in (" ", "\t"):
            break
        run.append(line)
    return run


def text_bounces(mail: Mail) -> list[Evidence]:
    """Evidence per failed recipient of a plain-text bounce (empty list: none found)."""
    text = mail.text
    recipients = find_recipients(mail, text)
    if not recipients:
        to = addresses(mail.original.get("to", ""))
        recipients = to[:1]
    if len(recipients) <= 1:
        recipient = recipients[0] if recipients else ""
        evidence = evidence_from_text(segment(text, recipient, []), recipient, True)
        if not (evidence.status or evidence.reply_code):
            whole = evidence_from_text(text, recipient, True)
            if whole.status or whole.reply_code:
                evidence = whole
        # The subject often names the cause ("Returned mail: User unknown") when the body does not.
        evidence.context = f"{text}\n{mail.headers.get('subject', '')}"
        return [evidence]
    return [evidence_from_text(segment(text, r, recipients), r, False) for r in recipients]

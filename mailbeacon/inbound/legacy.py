"""Bounces that are not RFC 3464 reports: qmail, Exim, old Sendmail, Exchange, provider texts.

Whether a message is a bounce at all is decided by signals (tables below): who sent it,
its subject, MTA boilerplate in the body, SMTP codes. The failed addresses come from
flufl.bounce, which knows many legacy layouts, and otherwise from addresses standing where
bounce texts put the recipient. The diagnostic is the SMTP reply nearest to each address.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from email.message import Message

from flufl.bounce import all_failures

from mailbeacon.events.bounces import Evidence
from mailbeacon.events.codes import (
    ADDRESS,
    addresses,
    find_codes,
    one_line,
    position,
    response_at,
)
from mailbeacon.inbound.message import Mail

# flufl.bounce logs every detector it runs at INFO, and a traceback before re-raising a
# detector's exception (which we catch). Keep its warnings and errors for the application's
# handlers, drop the per-message chatter, and never fall back to printing on stderr.
_flufl_log = logging.getLogger("flufl.bounce")
_flufl_log.setLevel(logging.WARNING)
_flufl_log.addHandler(logging.NullHandler())

# Local parts and display names of the software that sends bounces.
BOUNCE_SENDERS = re.compile(
    r"^(?:mailer[-_.]?daemon|mail[-_.]?daemon|postmaster|post_master|mail\.delivery\.system|"
    r"mdaemon|ndr|mail\.?agent)$",
    re.IGNORECASE,
)
BOUNCE_SENDER_NAMES = re.compile(
    r"mail delivery (?:system|subsystem|service)|mailer[- ]daemon|postmaster|"
    r"mail (?:deliver|delivery) system|system administrator|mail administrator",
    re.IGNORECASE,
)
# Subjects only bounces have; enough with any other sign of a bounce.
BOUNCE_SUBJECTS = re.compile(
    r"undeliver|delivery (?:status notification|failure|failed|problem|notification|has failed|"
    r"report|error|unsuccessful|delay)|failure notice|fail(?:ed|ure) delivery|returned mail|"
    r"returned to sender|mail delivery (?:failed|failure|system|problem)|non[- ]?deliver|"
    r"could not (?:be )?deliver|not delivered|unable to deliver|mail system error|"
    r"delayed mail|mail failure|message (?:not delivered|delivery failure)|\bndn\b|\bndr\b|"
    r"problem delivering|mail failed|returning (?:message )?to sender|"
    r"配信|送信できません|不達|未達",
    re.IGNORECASE,
)
# Subjects that may be a bounce's, or a person's: they count only from a bounce sender.
MAYBE_BOUNCE_SUBJECTS = re.compile(
    r"\bbounced?\b|\brejected\b|error sending|there was an error|system error|"
    r"warning: (?:could not|message)|could not send|permanent error|message blocked|エラー",
    re.IGNORECASE,
)
# Mailing-list software returning a post (fml, ezmlm, Mailman): a header that marks list
# software, and a subject that says the post was refused.
LIST_HEADERS = ("x-mlserver", "x-ml-name", "mailing-list", "list-id", "x-mailman-version")
LIST_REFUSALS = re.compile(
    r"(?:are|is) not (?:a )?member|not a member|loop alert|"
    r"post(?:ing)? (?:rejected|denied|refused)|message (?:rejected|refused)|not allowed to post",
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
MAX_RECIPIENTS = 500  # results per report; a real one lists a handful
MAX_FALLBACK_SEARCHES = 20


def _sender_local_part(sender: str) -> str:
    """ "Mail Delivery System <MAILER-DAEMON@x>" -> "MAILER-DAEMON"; also bare "<MAILER-DAEMON>"."""
    address = ADDRESS.search(sender)
    if address is not None:
        return address.group(0).split("@", 1)[0]
    bare = re.search(r"<([^<>@\s]+)>|^\s*([^<>@\s]+)\s*$", sender)
    return next((g for g in bare.groups() if g), "") if bare else ""


def bounce_signals(mail: Mail) -> tuple[bool, bool]:
    """(looks like a bounce at all, carries machine evidence) for a message with no DSN.

    Machine evidence is what only mail software produces: SMTP codes, MTA boilerplate, a
    delivery-status report type, an X-Failed-Recipients header. A message that calls itself
    an auto-reply needs it to count as a bounce.
    """
    sender = mail.headers.get("from", "")
    by_sender = bool(
        BOUNCE_SENDERS.match(_sender_local_part(sender))
        or BOUNCE_SENDER_NAMES.search(sender)
        or mail.headers.get("return-path", "x").strip() in ("<>", "")
    )
    subject = mail.headers.get("subject", "")
    text = mail.text[:200_000]
    code, status, _ = find_codes(text)
    machine = bool(
        STRONG_MARKERS.search(text)
        or code
        or status
        or mail.report_type == "delivery-status"
        or failed_header(mail)
    )
    wording = bool(WEAK_MARKERS.search(text))
    list_refusal = any(h in mail.headers for h in LIST_HEADERS) and bool(
        LIST_REFUSALS.search(subject))
    by_subject = bool(BOUNCE_SUBJECTS.search(subject))
    maybe_subject = bool(MAYBE_BOUNCE_SUBJECTS.search(subject))
    is_bounce = (
        list_refusal
        or (machine and (by_sender or by_subject or maybe_subject or wording))
        or (by_subject and (by_sender or wording))
        or (by_sender and (maybe_subject or wording))
    )
    return is_bounce, machine


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


def first_positions(text: str, wanted: Iterable[str]) -> dict[str, int]:
    """The first offset of each wanted address in `text`, found in one pass."""
    want = {w for w in wanted if w}
    found: dict[str, int] = {}
    for m in ADDRESS.finditer(text):
        address = m.group(0).strip(".").lower()
        if address in want and address not in found:
            found[address] = m.start()
            if len(found) == len(want):
                break
    # Forms the address pattern does not isolate (quoted, odd punctuation): search each,
    # a bounded number of times since every search scans the whole text.
    for address in sorted(want - found.keys())[:MAX_FALLBACK_SEARCHES]:
        at = position(text, address)
        if at >= 0:
            found[address] = at
    return found


def find_recipients(mail: Mail, text: str) -> list[str]:
    """Failed addresses in order of appearance in the notification text."""
    excluded = sender_addresses(mail)
    excluded.update(m.group(1).lower() for m in _SENDER_CONTEXT.finditer(text))
    failed = [a for a in failed_header(mail) if a not in excluded]
    if failed:
        at = first_positions(text, failed)
        return sorted(failed, key=lambda a: at.get(a, len(text)))[:MAX_RECIPIENTS]
    flufl = [a for a in dict.fromkeys(_flufl_addresses(mail.message)) if a not in excluded]
    at = first_positions(text, flufl)
    if at:
        return sorted(at, key=at.__getitem__)[:MAX_RECIPIENTS]
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


def segments(text: str, recipients: list[str]) -> dict[str, str]:
    """The part of `text` about each recipient: from the start of the line that first names
    it (Sendmail writes "554 <a@b>... reason", code first) to the line naming the next one.
    A recipient the text never names gets the whole text.
    """
    ordered = sorted((p, a) for a, p in first_positions(text, recipients).items())
    out: dict[str, str] = {}
    for index, (at, address) in enumerate(ordered):
        start = text.rfind("\n", 0, at) + 1
        end = len(text)
        if index + 1 < len(ordered):
            following = ordered[index + 1][0]
            end = text.rfind("\n", 0, following) + 1
            if end <= start:  # both on one line
                end = following
        out[address] = text[start:end]
    return {r: out.get(r, text) for r in recipients}


def evidence_from_text(text: str, recipient: str) -> Evidence:
    """Codes and diagnostic for one recipient from the text about it."""
    reply_code, status, offset = find_codes(text)
    diagnostic = response_at(text, offset) if offset >= 0 else ""
    if not diagnostic:
        diagnostic = _first_statement(text, recipient)
    return Evidence(recipient=recipient, status=status, reply_code=reply_code,
                    diagnostic=diagnostic, context=text)


def _first_statement(text: str, recipient: str) -> str:
    """Without an SMTP reply, the first informative line after the address."""
    at = first_positions(text, [recipient]).get(recipient, -1) if recipient else -1
    tail = text[at + len(recipient):] if at >= 0 else text
    lines = tail.splitlines()
    for index, line in enumerate(lines):
        cleaned = line.strip(" \t>:[]()<-*=_")
        if len(cleaned) >= 6 and not ADDRESS.fullmatch(cleaned) and not cleaned.endswith(":"):
            # Keep the indented lines a wrapped statement continues on.
            return one_line(" ".join([line, *_indented_run(lines[index + 1 : index + 6])]))
    return ""


def _indented_run(lines: list[str]) -> list[str]:
    run: list[str] = []
    for line in lines:
        if not line.strip() or line[:1] not in (" ", "\t"):
            break
        run.append(line)
    return run


def text_bounces(mail: Mail) -> list[Evidence]:
    """Evidence per failed recipient of a plain-text bounce."""
    text = mail.text
    recipients = find_recipients(mail, text) or addresses(mail.original.get("to", ""))[:1]
    if len(recipients) <= 1:
        recipient = recipients[0] if recipients else ""
        evidence = evidence_from_text(segments(text, [recipient])[recipient], recipient)
        if not (evidence.status or evidence.reply_code):
            whole = evidence_from_text(text, recipient)
            if whole.status or whole.reply_code:
                evidence = whole
        # The subject often names the cause ("Returned mail: User unknown") when the body does not.
        evidence.context = f"{text}\n{mail.headers.get('subject', '')}"
        return [evidence]
    about = segments(text, recipients)
    return [evidence_from_text(about[r], r) for r in recipients]

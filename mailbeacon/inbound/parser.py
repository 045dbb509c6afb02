"""Parse a received report (bounce, complaint, auto-reply) into `Result`s. Pure: bytes in.

The readers are tried from the most to the least structured:

1. complaints: RFC 5965 feedback reports (lenient), Hotmail JMRP, mail-client opt-outs;
2. Amazon SES JSON notifications;
3. RFC 3464 delivery status reports (also DSN fields pasted into a text part);
4. plain-text bounces (qmail, Exim, Exchange, provider texts), found by signals;
5. RFC 3834 auto-replies, only once a bounce is ruled out, since bounce software marks its
   messages `Auto-Submitted: auto-replied` too.

    >>> [r.reason for r in parse(raw_dsn)]                        # doctest: +SKIP
    ['userunknown', 'mailboxfull']
"""

from __future__ import annotations

from mailbeacon.events.bounces import Evidence
from mailbeacon.inbound.arf import complaint
from mailbeacon.inbound.autoreply import auto_reply, is_auto_reply
from mailbeacon.inbound.bounce import bounce_result
from mailbeacon.inbound.dsn import Block, Report, looks_like_dsn, read_fields
from mailbeacon.inbound.legacy import (
    MAX_RECIPIENTS,
    bounce_signals,
    evidence_from_text,
    segments,
    text_bounces,
)
from mailbeacon.inbound.message import Mail, read_mail
from mailbeacon.inbound.result import Kind, Result
from mailbeacon.inbound.ses import ses_results

__all__ = ["Kind", "Result", "parse"]


# How deep a report forwarded inside another message is looked for.
MAX_FORWARD_DEPTH = 2


def parse(raw: bytes) -> list[Result]:
    """Everything a received message reports: one `Result` per bounced recipient, one for a
    complaint, one auto-reply, or `[Result(Kind.NOT_A_REPORT)]`. Never raises.
    """
    results: list[Result] = []
    if isinstance(raw, (bytearray, memoryview)):
        raw = bytes(raw)
    if isinstance(raw, bytes):
        try:
            results = _parse(raw, 0)
        except Exception:  # a message we cannot make sense of is, for us, not a report
            results = []
    return results or [Result(Kind.NOT_A_REPORT)]


def _parse(raw: bytes, depth: int) -> list[Result]:
    mail = read_mail(raw)
    results = _read(mail)
    if depth < MAX_FORWARD_DEPTH and mail.embedded and _weak(results):
        # A bounce forwarded by a person or a relay: the attached message is the real report.
        inner = _parse(mail.embedded, depth + 1)
        if inner and not _weak(inner) and inner[0].kind is not Kind.AUTO_REPLY:
            return inner
    return results


def _weak(results: list[Result]) -> bool:
    """No result, or bounces without a single code: a forwarded report may say more."""
    return all(r.kind is Kind.BOUNCE and not (r.status or r.reply_code) for r in results)


def _read(mail: Mail) -> list[Result]:
    found = complaint(mail)
    if found is not None:
        return [found]
    from_ses = ses_results(mail)
    if from_ses is not None:
        return from_ses
    from_dsn = _dsn_bounces(mail)
    if from_dsn:
        return from_dsn
    looks_bounced, machine_evidence = bounce_signals(mail)
    auto = is_auto_reply(mail)
    # An auto-reply header with no SMTP codes and no MTA boilerplate: trust the header.
    if looks_bounced and (machine_evidence or not auto):
        return [bounce_result(e, mail.original) for e in text_bounces(mail)]
    if auto:
        return [auto_reply(mail)]
    return []


def _dsn_report(mail: Mail) -> Report:
    report = Report()
    for text in mail.status_texts:
        read_fields(text, report)
    if not report.blocks:
        # Lenient: some MTAs paste the fields into the human-readable part.
        for text in mail.texts:
            if looks_like_dsn(text):
                read_fields(text, report)
    return report


def _dsn_bounces(mail: Mail) -> list[Result]:
    """One bounce per recipient block of a delivery status report."""
    blocks = [b for b in _dsn_report(mail).blocks if b.recipient][:MAX_RECIPIENTS]
    about = segments(mail.text, [b.recipient for b in blocks])
    return [bounce_result(_evidence(b, about[b.recipient]), mail.original) for b in blocks]


def _evidence(block: Block, context: str) -> Evidence:
    """A block's fields, completed from the human-readable text when they say little."""
    evidence = Evidence(
        recipient=block.recipient,
        status=block.status,
        diagnostic=block.diagnostic,
        diagnostic_type=block.diagnostic_type,
        remote_mta=block.remote_mta,
        action=block.action,
        context=context,
    )
    if not block.diagnostic:
        from_text = evidence_from_text(context, block.recipient)
        evidence.diagnostic = from_text.diagnostic
        evidence.reply_code = from_text.reply_code
        evidence.status = evidence.status or from_text.status
    return evidence

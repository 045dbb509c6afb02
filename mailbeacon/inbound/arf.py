"""Complaints: RFC 5965 feedback reports, read leniently, and two common non-ARF shapes.

Real reports say `Version: 0.1`, are sometimes not multipart, lack `report-type`, or redact
the complaining address; then the address is recovered from the returned message (its
`To:` or Hotmail's `X-HmXmrOriginalRecipient:`). An Apple Mail "unsubscribe" message
(`X-Apple-Unsubscribe: true`) is an opt-out from the address that sent it.
"""

from __future__ import annotations

import re

from mailbeacon.events.codes import ADDRESS, first_address, one_line
from mailbeacon.events.reasons import Reason
from mailbeacon.inbound.message import Mail
from mailbeacon.inbound.result import Kind, Result, kept_headers, message_id

_FIELD = re.compile(r"^([A-Za-z][A-Za-z0-9-]{1,40})[ \t]*:[ \t]*(.*)$")
_FEEDBACK_LINE = re.compile(r"^feedback-type[ \t]*:", re.IGNORECASE | re.MULTILINE)
# Placeholders that providers put where they removed the complaining address.
_REDACTED = re.compile(r"redacted|undisclosed|^x+@|^\*+@|^[#x*]+$", re.IGNORECASE)
# Returned-message headers that name the complaining recipient (Hotmail/Outlook.com JMRP).
RECIPIENT_HEADERS = ("x-hmxmroriginalrecipient", "x-original-to", "delivered-to", "to")
# Opt-out requests sent by mail clients instead of ARF: header -> required value.
UNSUBSCRIBE_HEADERS: dict[str, re.Pattern[str]] = {
    "x-apple-unsubscribe": re.compile(r"^\s*true\b", re.IGNORECASE),
}


def read_fields(text: str) -> dict[str, list[str]]:
    """Feedback-report fields, lower-case name -> all values (some fields repeat)."""
    fields: dict[str, list[str]] = {}
    last = ""
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and last and line.strip():
            fields[last][-1] = f"{fields[last][-1]} {line.strip()}"
            continue
        m = _FIELD.match(line.strip())
        if m is None:
            last = ""
            continue
        last = m.group(1).lower()
        fields.setdefault(last, []).append(m.group(2).strip())
    return fields


def _usable(address: str) -> str:
    address = address.strip().lower()
    return "" if not address or _REDACTED.search(address) else address


def _recipient(fields: dict[str, list[str]], original: dict[str, str]) -> str:
    for name in ("original-rcpt-to", "removal-recipient"):
        for value in fields.get(name, []):
            address = _usable(first_address(value))
            if address:
                return address
    for name in RECIPIENT_HEADERS:
        found = ADDRESS.findall(original.get(name, ""))
        if len(found) == 1 and _usable(found[0]):
            return _usable(found[0])
    return ""


def _report_fields(mail: Mail) -> dict[str, list[str]] | None:
    """The feedback-report fields, from a proper part or from a lenient look at the text."""
    if mail.feedback_texts:
        fields: dict[str, list[str]] = {}
        for text in mail.feedback_texts:
            for name, values in read_fields(text).items():
                fields.setdefault(name, []).extend(values)
        return fields
    for text in mail.texts:
        if _FEEDBACK_LINE.search(text):
            return read_fields(text)
    if mail.report_type == "feedback-report":
        return {}
    if "x-hmxmroriginalrecipient" in mail.original:
        return {"feedback-type": ["abuse"]}
    return None


def complaint(mail: Mail) -> Result | None:
    """The complaint in `mail`, or None if it is not one."""
    fields = _report_fields(mail)
    if fields is None:
        return _unsubscribe(mail)
    declared = (fields.get("feedback-type") or [""])[0].split()
    reporter = next(
        (one_line(fields[name][0], 255) for name in ("user-agent", "reported-domain")
         if fields.get(name)),
        first_address(mail.headers.get("from", "")),
    )
    return Result(
        kind=Kind.COMPLAINT,
        recipient=_recipient(fields, mail.original),
        reason=Reason.FEEDBACK.value,
        feedback_type=(declared[0] if declared else "abuse").lower().strip(";,"),
        reporter=reporter,
        diagnostic=one_line(mail.headers.get("subject", "")),
        original_message_id=message_id(mail.original.get("message-id", "")),
        original_headers=kept_headers(mail.original),
    )


def _unsubscribe(mail: Mail) -> Result | None:
    if not any(p.search(mail.headers.get(h, "")) for h, p in UNSUBSCRIBE_HEADERS.items()):
        return None
    return Result(
        kind=Kind.COMPLAINT,
        recipient=_usable(first_address(mail.headers.get("from", ""))),
        reason=Reason.FEEDBACK.value,
        feedback_type="opt-out",
        reporter=first_address(mail.headers.get("from", "")),
        diagnostic=one_line(mail.headers.get("subject", "")),
        original_message_id=message_id(mail.headers.get("in-reply-to", "")),
        original_headers=kept_headers(mail.original),
    )

"""A message as a sender submitted it, checked and turned into the MIME we store.

The HTTP API (and later SMTP submission) produce a `Submission`; `build_mime` makes the
message every recipient gets before tracking is applied per recipient.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate
from typing import Any

from mailbeacon.errors import BadRequest
from mailbeacon.model.addresses import format_mailboxes, needs_smtputf8
from mailbeacon.model.tags import check_tags
from mailbeacon.send.headers import check_text, check_value, check_written, refuse_owned

MAX_RECIPIENTS = 1000
_HEADER_NAME = re.compile(r"^[!-9;-~]{1,76}$")  # printable ASCII except ':'
# Headers made from fields; a sender sets them through the matching field. (Headers
# nobody may set are in headers.OWNED.)
_FIELD_HEADERS = {
    "from", "to", "cc", "bcc", "subject", "date", "message-id", "x-mailgun-variables",
    "x-mailbeacon-delivery",
}


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes
    inline: bool = False


@dataclass(frozen=True)
class TrackingOptions:
    """Per-message overrides of the domain's tracking settings (None: use the domain's)."""

    tracking: bool | None = None
    opens: bool | None = None
    clicks: str | None = None  # yes | no | htmlonly
    pixel_top: bool | None = None

    def to_json(self) -> dict[str, Any]:
        return {"tracking": self.tracking, "opens": self.opens, "clicks": self.clicks,
                "pixel_top": self.pixel_top}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrackingOptions:
        return cls(data.get("tracking"), data.get("opens"), data.get("clicks"),
                   data.get("pixel_top"))


@dataclass(frozen=True)
class DeliveryOptions:
    """How and when to deliver, whatever the path the message came in by."""

    testmode: bool = False  # record as delivered (650), relay nothing
    deliver_at: int | None = None  # microseconds; None: now
    # Batch sending: address (lowercase) -> variables for %recipient.NAME% substitution.
    recipient_variables: dict[str, dict[str, Any]] | None = None


@dataclass(frozen=True)
class Submission:
    sender: tuple[str, str]  # (display name, address)
    to: list[tuple[str, str]]
    cc: list[tuple[str, str]] = field(default_factory=list)
    bcc: list[tuple[str, str]] = field(default_factory=list)
    subject: str = ""
    text: str | None = None
    html: str | None = None
    tags: list[str] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)
    variables: dict[str, Any] = field(default_factory=dict)
    options: TrackingOptions = TrackingOptions()
    attachments: list[Attachment] = field(default_factory=list)
    delivery: DeliveryOptions = DeliveryOptions()

    def recipients(self) -> list[str]:
        """Every envelope recipient once (case-insensitively), in the order given."""
        seen: dict[str, str] = {}
        for _, address in (*self.to, *self.cc, *self.bcc):
            seen.setdefault(address.lower(), address)
        return list(seen.values())


def check_submission(sub: Submission) -> None:
    """BadRequest for anything a relay or a recipient should never see."""
    if not sub.to:
        raise BadRequest("'to' parameter is missing")
    if sub.text is None and sub.html is None:
        raise BadRequest("Need at least one of 'text' or 'html' parameters specified")
    if len(sub.recipients()) > MAX_RECIPIENTS:
        raise BadRequest(f"Too many recipients: at most {MAX_RECIPIENTS} per message")
    check_tags(sub.tags)
    check_value("'subject' parameter", "Subject", sub.subject)
    for param, pairs, name in (("from", [sub.sender], "From"), ("to", sub.to, "To"),
                               ("cc", sub.cc, "Cc")):
        for display_name, address in pairs:
            check_text(f"'{param}' parameter", display_name + address)
        if pairs:
            check_value(f"'{param}' parameter", name, format_mailboxes(pairs))
    for name, value in sub.headers:
        if not _HEADER_NAME.match(name):
            raise BadRequest(f"'h:{name}' is not a valid header name")
        if name.lower() in _FIELD_HEADERS:
            raise BadRequest(f"'h:{name}' cannot be set; use the matching parameter")
        refuse_owned(f"'h:{name}'", name)
        check_value(f"'h:{name}'", name, value)
    for att in sub.attachments:
        check_text("attachment file name", att.filename)


def build_mime(sub: Submission, message_id: str, now: float) -> EmailMessage:
    """The message as every recipient gets it, before per-recipient tracking."""
    # RFC 6532: a non-ASCII local part is written in UTF-8 (the relay needs SMTPUTF8).
    utf8 = any(needs_smtputf8(address) for _, address in (sub.sender, *sub.to, *sub.cc))
    msg = EmailMessage(policy=SMTP.clone(utf8=True) if utf8 else SMTP)
    msg["From"] = format_mailboxes([sub.sender])
    msg["To"] = format_mailboxes(sub.to)
    if sub.cc:
        msg["Cc"] = format_mailboxes(sub.cc)
    msg["Subject"] = sub.subject
    msg["Date"] = formatdate(now, localtime=False)
    msg["Message-ID"] = f"<{message_id}>"
    for name, value in sub.headers:
        msg[name] = value

    if sub.text is not None:
        msg.set_content(sub.text)
        if sub.html is not None:
            msg.add_alternative(sub.html, subtype="html")
    else:
        msg.set_content(sub.html or "", subtype="html")
    inline = [a for a in sub.attachments if a.inline]
    if inline:
        html_part = _html_part(msg)
        for att in inline:
            maintype, _, subtype = att.content_type.partition("/")
            html_part.add_related(att.data, maintype=maintype, subtype=subtype,
                                  cid=f"<{att.filename}>", filename=att.filename,
                                  disposition="inline")
    for att in sub.attachments:
        if not att.inline:
            maintype, _, subtype = att.content_type.partition("/")
            msg.add_attachment(att.data, maintype=maintype, subtype=subtype,
                               filename=att.filename)
    for param, name in (("from", "From"), ("to", "To"), ("cc", "Cc")):
        if name in msg:  # as written, then read by a receiver
            check_written(f"'{param}' parameter", name, msg[name], msg.policy)
    for part in msg.iter_attachments():  # a file name must decode to a file name
        for name in ("Content-Disposition", "Content-Type"):
            check_value("attachment file name", name, str(part.get(name, "")))
    return msg


def _html_part(msg: EmailMessage) -> EmailMessage:
    for part in msg.walk():
        if part.get_content_type() == "text/html":
            assert isinstance(part, EmailMessage)
            return part
    return msg

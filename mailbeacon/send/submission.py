"""A message as the API's form send gives it, in fields, made into an `OutgoingMessage`.

`Submission.outgoing` checks what only fields can get wrong (header names, text or html,
display names), builds with `build_mime` the message every recipient gets before
tracking is applied per recipient, and leaves the checks every path shares to
`OutgoingMessage`.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate
from typing import Any

from mailbeacon.errors import BadRequest
from mailbeacon.model.addresses import format_mailboxes, needs_smtputf8
from mailbeacon.model.ids import message_id_local
from mailbeacon.send.headers import check_text, check_value, check_written, refuse_owned
from mailbeacon.send.options import DeliveryOptions, TrackingOptions
from mailbeacon.send.outgoing import OutgoingMessage, summary

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

    def outgoing(self, domain: str, method: str = "http") -> OutgoingMessage:
        """The message to queue, with a new Message-ID at `domain`; BadRequest for
        anything a relay or a recipient should never see. Blocking (builds MIME)."""
        check_submission(self)
        now = time.time()
        message_id = f"{message_id_local(int(now * 1_000_000))}@{domain}"
        mime = build_mime(self, message_id, now)
        return OutgoingMessage(
            mime=mime.as_bytes(), message_id=message_id, sender=self.sender[1],
            recipients=tuple(a for _, a in (*self.to, *self.cc, *self.bcc)),
            headers=summary(message_id, mime),
            tags=tuple(self.tags), variables=self.variables, options=self.options,
            delivery=self.delivery, method=method)


def check_submission(sub: Submission) -> None:
    """BadRequest for what only a message given in fields can get wrong (the checks all
    paths share are OutgoingMessage's)."""
    if sub.text is None and sub.html is None:
        raise BadRequest("Need at least one of 'text' or 'html' parameters specified")
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

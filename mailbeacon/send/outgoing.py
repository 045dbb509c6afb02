"""An outgoing message: the one value intake takes, however the message came in.

The API's form send (`submission.Submission.outgoing`), its raw MIME send and SMTP
submission (`mime.from_mime`) each build an `OutgoingMessage`. Making one checks what
every path shares (recipients, tags, the sender, each recipient's subject), so no path
skips a check or words its refusal differently.

>>> OutgoingMessage(b"...", "1@example.com", "shop@example.com", ("a@example.org",),
...                 {"subject": "Hi"}, tags=("Sale", "sale")).tags
('sale',)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from mailbeacon.errors import BadRequest
from mailbeacon.model.tags import check_tags, normalize_tags
from mailbeacon.send.compose import substitute_variables
from mailbeacon.send.headers import check_value
from mailbeacon.send.options import DeliveryOptions, TrackingOptions

MAX_RECIPIENTS = 1000


@dataclass(frozen=True)
class OutgoingMessage:
    """One message to queue, checked when made: BadRequest for no recipient or more than
    MAX_RECIPIENTS, a tag that may not be stored, a sender without a domain, or a
    recipient's subject (their `recipient-variables` substituted) that is no valid
    header. Recipients are kept once each (case-insensitively) and tags normalized."""

    mime: bytes  # as every recipient gets it, before per-recipient tracking
    message_id: str  # without <>
    sender: str  # the address it is from (the envelope sender before VERP)
    recipients: tuple[str, ...]  # envelope recipients, in the order given
    # What events show of the message: message-id, from, to, subject, and list-id (the
    # scope of %mailing_list_unsubscribe_url%) when it has one; see `summary`.
    headers: Mapping[str, str]
    tags: tuple[str, ...] = ()
    variables: Mapping[str, Any] = field(default_factory=dict)
    options: TrackingOptions = TrackingOptions()
    delivery: DeliveryOptions = DeliveryOptions()
    method: str = "http"  # http | smtp: how it was submitted (the `accepted` event says)

    def __post_init__(self) -> None:
        recipients = tuple(_unique(self.recipients))
        if not recipients:
            raise BadRequest("'to' parameter is missing")
        if len(recipients) > MAX_RECIPIENTS:
            raise BadRequest(f"Too many recipients: at most {MAX_RECIPIENTS} per message")
        check_tags(list(self.tags))
        if "@" not in self.sender:
            raise BadRequest("the message has no usable From address")
        check_recipient_variables(self.headers.get("subject", ""),
                                  self.delivery.recipient_variables, recipients)
        # Normalized once here, so every path stores the same (frozen: set directly).
        object.__setattr__(self, "recipients", recipients)
        object.__setattr__(self, "tags", tuple(normalize_tags(list(self.tags))))


def summary(message_id: str, mime: EmailMessage) -> dict[str, str]:
    """The `headers` of an OutgoingMessage, from its message as a builder holds it
    (the parsed header objects, so nothing is parsed again)."""
    headers = {"message-id": message_id, "from": str(mime.get("From", "")),
               "to": str(mime.get("To", "")), "subject": str(mime.get("Subject", ""))}
    list_id = str(mime.get("List-Id", "")).strip()
    if list_id:  # "Name <id>" -> "id", as unsubscribe scopes store it
        headers["list-id"] = list_id[list_id.rfind("<") + 1:].rstrip(">").strip().lower()
    return headers


def check_recipient_variables(subject: str, variables: dict[str, dict[str, Any]] | None,
                              recipients: Sequence[str]) -> None:
    """Each recipient's subject, their values substituted, must be a valid header value
    (values reach headers only through %recipient.NAME% in the subject)."""
    if not variables or "%recipient." not in subject:
        return
    for rcpt in recipients:
        own = variables.get(rcpt.lower())
        if own:
            check_value("'recipient-variables' (in the subject)", "Subject",
                        substitute_variables(subject, own), f" for {rcpt}")


def _unique(addresses: Sequence[str]) -> list[str]:
    """Every address once (case-insensitively), in the order given."""
    seen: dict[str, str] = {}
    for address in addresses:
        seen.setdefault(address.lower(), address)
    return list(seen.values())

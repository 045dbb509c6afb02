"""A message submitted as raw MIME (messages.mime, SMTP submission), made into an
`OutgoingMessage`: its control headers read and removed (controls.py), the MIME checked
as every message we relay must be, Bcc dropped, a Message-ID and Date added if missing.

Both doors call `from_mime` with what they know besides the bytes: the envelope sender
(SMTP) or none (the From header's address), and the API's fields, if any.
"""

from __future__ import annotations

import codecs
import re
import time
from collections.abc import Sequence
from email import message_from_bytes
from email.message import EmailMessage
from email.utils import formatdate, getaddresses

from mailbeacon.errors import BadRequest
from mailbeacon.model.ids import message_id_local
from mailbeacon.send.compose import POLICY
from mailbeacon.send.controls import Overrides, controls_from_headers
from mailbeacon.send.headers import MAX_MIME_DEPTH, UNTRUSTED_IN_MIME, check_value, mime_depth
from mailbeacon.send.outgoing import OutgoingMessage, summary

_MESSAGE_ID = re.compile(r"^<([^<>@\s]+@[^<>@\s]+)>$")
_FOLD = re.compile(r"\r?\n(?=[ \t])")  # a folded header's line breaks


def from_mime(raw: bytes, domain: str, recipients: Sequence[str], *,
              sender: str | None = None, method: str = "http",
              overrides: Overrides | None = None) -> OutgoingMessage:
    """The message to queue from `raw`, sent from `domain` to the envelope `recipients`;
    BadRequest for anything a relay or a recipient should never see. `sender`: the
    envelope sender, or None for the From header's address. Blocking (parses MIME).

    >>> from_mime(b"From: a@example.com\\r\\nSubject: Hi\\r\\n\\r\\nHello\\r\\n",
    ...           "example.com", ["b@example.org"]).headers["subject"]
    'Hi'
    """
    controls = controls_from_headers(raw)
    if overrides is not None:
        controls = overrides.over(controls)
    msg = parse_submitted(controls.stripped)
    if sender is None:
        froms = getaddresses([str(msg.get("From", ""))])
        sender = froms[0][1] if froms and froms[0][1] else ""
    del msg["Bcc"]  # recipients come from the envelope; a Bcc header must not travel
    now = time.time()
    found = _MESSAGE_ID.match(str(msg.get("Message-ID", "")).strip())
    if found:
        message_id = found.group(1)
    else:
        message_id = f"{message_id_local(int(now * 1_000_000))}@{domain}"
        del msg["Message-ID"]
        msg["Message-ID"] = f"<{message_id}>"
    if "Date" not in msg:
        msg["Date"] = formatdate(now)
    return OutgoingMessage(
        mime=msg.as_bytes(), message_id=message_id, sender=sender,
        recipients=tuple(recipients),
        headers=summary(message_id, msg),
        tags=tuple(controls.tags), variables=controls.variables, options=controls.options,
        delivery=controls.delivery, method=method)


def parse_submitted(raw: bytes) -> EmailMessage:
    """Submitted MIME, checked as every message we relay must be: BadRequest for MIME
    nested deeper than MAX_MIME_DEPTH, a part in a charset Python does not know, or a
    header holding control characters (after decoding). Trust headers of the sender's
    (DKIM-Signature, ARC-*, Authentication-Results, Return-Path) are dropped."""
    try:
        msg = message_from_bytes(raw, _class=EmailMessage, policy=POLICY)
    except RecursionError as exc:
        raise BadRequest(f"'message' nests MIME parts deeper than {MAX_MIME_DEPTH} "
                         "levels") from exc
    assert isinstance(msg, EmailMessage)
    if msg.defects and not msg.keys():
        raise BadRequest("'message' is not a MIME message")
    if mime_depth(msg) > MAX_MIME_DEPTH:
        raise BadRequest(f"'message' nests MIME parts deeper than {MAX_MIME_DEPTH} levels")
    for name in {n.lower() for n in msg}:
        if name in UNTRUSTED_IN_MIME or name.startswith("arc-"):
            del msg[name]
    for number, part in enumerate(msg.walk()):
        where = "" if number == 0 else f" of MIME part {number}"
        for name, value in part.raw_items():
            unfolded = _FOLD.sub("", str(value))
            check_value(f"header '{name}'{where}", name, unfolded)
        charset = part.get_content_charset()
        if charset:
            try:
                codecs.lookup(charset)
            except LookupError as exc:
                raise BadRequest(f"MIME part {number} ({part.get_content_type()}) has an "
                                 f"unknown charset {charset!r}") from exc
    return msg

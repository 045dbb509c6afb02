"""Reading stored MIME for display: its headers, and its HTML as a preview document.

The preview is served from its own URL with its own policy: a sandbox without scripts,
so a message's HTML can never run code or reach the dashboard's cookies or pages.
"""

from __future__ import annotations

import html
import re
from email import message_from_bytes
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.policy import default

from starlette.responses import Response

# Message preview (the MIME as submitted, before tracking): nothing but display.
SANDBOX_STRICT = ""
# Local outbox (the MIME as delivered): its pixel loads, its links open in a new tab.
SANDBOX_LINKS = ("allow-popups allow-popups-to-escape-sandbox "
                 "allow-top-navigation-by-user-activation")
_POLICY = ("sandbox {sandbox}; default-src 'none'; img-src http: https: data:; "
           "style-src 'unsafe-inline' http: https:; font-src http: https: data:; "
           "frame-ancestors 'self'; form-action 'none'; base-uri 'none'")
_HEAD = re.compile(rb"<head\b[^>]*>", re.IGNORECASE)
_HTML = re.compile(rb"<html\b[^>]*>", re.IGNORECASE)
_DOCTYPE = re.compile(rb"<!doctype[^>]*>", re.IGNORECASE)
MAX_PARSED = 30 * 1024 * 1024


def parse(raw: bytes) -> EmailMessage:
    msg = message_from_bytes(raw[:MAX_PARSED], _class=EmailMessage, policy=default)
    assert isinstance(msg, EmailMessage)
    return msg


def headers(raw: bytes) -> list[tuple[str, str]]:
    """The top-level headers, in order, decoded (only the header block is parsed)."""
    block = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    parsed = BytesHeaderParser(policy=default).parsebytes(block + b"\r\n\r\n")
    return [(name, str(value)) for name, value in parsed.items()]


def body_parts(msg: EmailMessage) -> tuple[str | None, str | None]:
    """The message's HTML and plain-text bodies (None where it has none)."""
    found: list[str | None] = []
    for kind in ("html", "plain"):
        part = msg.get_body(preferencelist=(kind,))
        content: str | None = None
        if part is not None and part.get_content_type() == f"text/{kind}":
            try:
                content = str(part.get_content())
            except (LookupError, ValueError):  # unknown charset, broken encoding
                payload = part.get_payload(decode=True)
                content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) \
                    else None
        found.append(content)
    return found[0], found[1]


def attachments(msg: EmailMessage) -> list[tuple[str, str, int]]:
    """(filename, content type, size in bytes) of each attachment."""
    found = []
    for part in msg.iter_attachments():
        payload = part.get_payload(decode=True)
        size = len(payload) if isinstance(payload, bytes) else 0
        found.append((part.get_filename() or "(unnamed)", part.get_content_type(), size))
    return found


def preview_document(raw: bytes, links_in_new_tab: bool) -> bytes:
    """The HTML to show for a message: its HTML part, else its text in a <pre>."""
    html_body, text_body = body_parts(parse(raw))
    if html_body is None:
        text = html.escape(text_body or "(this message has no text or HTML body)")
        html_body = ('<!DOCTYPE html><meta charset="utf-8"><pre style="white-space:pre-wrap;'
                     f'font:14px/1.5 system-ui,sans-serif;margin:12px">{text}</pre>')
    document = html_body.encode("utf-8")
    if links_in_new_tab:
        document = _insert_base(document)
    return document


def _insert_base(document: bytes) -> bytes:
    # A <base target> makes every link open a new tab, without rewriting any link.
    base = b'<base target="_blank">'
    for pattern in (_HEAD, _HTML, _DOCTYPE):
        found = pattern.search(document)
        if found:
            return document[:found.end()] + base + document[found.end():]
    return base + document


def preview_response(raw: bytes, links_in_new_tab: bool) -> Response:
    sandbox = SANDBOX_LINKS if links_in_new_tab else SANDBOX_STRICT
    return Response(preview_document(raw, links_in_new_tab),
                    media_type="text/html; charset=utf-8",
                    headers={"Content-Security-Policy": _POLICY.format(sandbox=sandbox),
                             "X-Frame-Options": "SAMEORIGIN",
                             "Referrer-Policy": "no-referrer"})

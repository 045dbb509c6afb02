"""Per-recipient MIME: the stored message with this recipient's variables, tracking,
unsubscribe links, VERP sender and DKIM signature.

The stored MIME is parsed and its text parts analysed once per message (`Composer`);
each recipient then costs one render of each part with their own signed tokens. With
recipient variables the HTML is still analysed once, with the placeholders in place, and
each render fills them in (values are inserted as given; markup inside a value is not
analysed, so a link written inside a value is not tracked). Plain-text parts, cheap to
analyse, are analysed per recipient after substitution.

Order per recipient: substitute %recipient.NAME%, add the unsubscribe footer (when the
domain asks for it and the body has no unsubscribe placeholder), rewrite links and add
the pixel (placeholders are left alone), then fill in the unsubscribe placeholders.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from email import message_from_bytes
from email.headerregistry import BaseHeader, HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.policy import SMTP, Policy
from email.utils import getaddresses
from functools import partial
from typing import Any

from mailbeacon.domains.domain import DEFAULT_FOOTER_HTML, DEFAULT_FOOTER_TEXT, Domain
from mailbeacon.model.addresses import format_mailboxes, needs_smtputf8
from mailbeacon.model.hit import HONEYPOT_INDEX
from mailbeacon.model.tokens import DeliveryTokens, TokenCodec
from mailbeacon.send import dkim
from mailbeacon.send.headers import VerifyingPolicy, verify_generated
from mailbeacon.send.options import TrackingOptions
from mailbeacon.send.rewrite import Link, plan_html, plan_text

DELIVERY_HEADER = "X-Mailbeacon-Delivery"
# Control headers that steer mailbeacon and must not reach recipients.
CONTROL_HEADERS = ("X-Mailgun-Variables",)
_RECIPIENT_VAR = re.compile(r"%recipient\.([A-Za-z0-9_.\-]+)%")
_UNSUBSCRIBE_PLACEHOLDER = re.compile(
    r"%(unsubscribe_url|tag_unsubscribe_url|mailing_list_unsubscribe_url|unsubscribe_email)%")
# Token scope of each placeholder: "" the whole domain, "tag" the message's tags,
# "list" the mailing list named by the message's List-Id.
_SCOPES = {"unsubscribe_url": "", "tag_unsubscribe_url": "tag",
           "mailing_list_unsubscribe_url": "list"}


class _Header(BaseHeader):
    """A header object that folds once: a header object never changes, and folding
    (RFC 5322 line breaking) is most of what writing a message costs. Folding depends on
    these three settings of the policy only (the generator clones the policy for every
    MIME part, so the policy object itself changes)."""

    def fold(self, *, policy: Policy) -> str:
        key = (policy.max_line_length, policy.linesep, getattr(policy, "utf8", False))
        folded = self.__dict__.get("_mb_folded")
        if folded is None or folded[0] != key:
            folded = self.__dict__["_mb_folded"] = (key, super().fold(policy=policy))
        return str(folded[1])


class _HeaderCache(HeaderRegistry):
    """The email package's header registry, remembering what it made.

    With the modern policy every read of a header parses it again (parsing one message
    reads its Content-Type a dozen times), every parse first builds a new class, and
    every render sets the same part headers again. Header objects are immutable, so one
    per (name, value) serves every message; the result is byte for byte the same.
    """

    def __init__(self, size: int = 1024) -> None:
        super().__init__(base_class=_Header)
        self._size = size
        self._classes: dict[str, type] = {}
        self._made: dict[tuple[str, str], Any] = {}

    def __getitem__(self, name: str) -> type:
        key = name.lower()
        found = self._classes.get(key)
        if found is None:
            found = self._classes[key] = super().__getitem__(name)
        return found

    def __call__(self, name: str, value: str) -> Any:
        key = (name, value)
        found = self._made.get(key)
        if found is None:
            if len(self._made) >= self._size:  # per-recipient values would pile up
                self._made.clear()
            found = self._made[key] = self[name](name, value)
        return found


class _UrlListHeader(UnstructuredHeader, _Header):
    """List-Unsubscribe (RFC 2369: angle-bracketed URLs), folded between its URLs and
    never written as RFC 2047 encoded words: the email package encodes any header with
    a word longer than a line, and receivers (Gmail, Yahoo) do not decode it there, so
    one-click unsubscribe would not be offered. Our URLs are ASCII without spaces."""

    def fold(self, *, policy: Policy) -> str:
        urls = re.split(r"(?<=>)\s*,\s*", str(self).strip())
        if not str(self).isascii() or not all(u.startswith("<") for u in urls):
            return str(super().fold(policy=policy))  # not ours: the email package's way
        return f"{self.name}: " + ("," + policy.linesep + " ").join(urls) + policy.linesep


def _header_registry() -> _HeaderCache:
    registry = _HeaderCache()
    registry.map_to_type("list-unsubscribe", _UrlListHeader)
    return registry


# SMTP's policy (CRLF, 7-bit headers), with the caching header registry; generating a
# message with it fails (HeaderInjection) where a header would not stay one field.
POLICY = VerifyingPolicy(linesep=SMTP.linesep, header_factory=_header_registry())
# For messages with a non-ASCII local part in an address header (RFC 6532).
UTF8_POLICY = POLICY.clone(utf8=True)


@dataclass(frozen=True)
class Tracking:
    """The tracking that applies to one message, after the settings cascade (DESIGN 5)."""

    opens: bool
    clicks: str  # yes | no | htmlonly
    pixel_top: bool
    base_url: str

    @classmethod
    def resolve(cls, domain: Domain, options: TrackingOptions, default_base: str) -> Tracking:
        opens, clicks = domain.track_opens, domain.track_clicks
        if options.tracking is not None:  # o:tracking toggles both
            opens, clicks = options.tracking, "yes" if options.tracking else "no"
        if options.opens is not None:
            opens = options.opens
        if options.clicks is not None:
            clicks = options.clicks
        pixel_top = domain.pixel_top if options.pixel_top is None else options.pixel_top
        return cls(opens, clicks, pixel_top, domain.tracking_base(default_base))


@dataclass(frozen=True)
class Composed:
    data: bytes
    envelope_sender: str  # VERP: bounce+<token>@<bounce domain>
    wire: bytes | None = None  # `data` as SMTP DATA sends it (relay.transparent), if made


class _Part:
    """One text part to personalise: where it is, its charset, its original text."""

    def __init__(self, part: EmailMessage, html: bool) -> None:
        self.part = part
        self.html = html
        self.charset = part.get_content_charset() or "utf-8"
        self.source = str(part.get_content())


class Composer:
    """Renders one stored message for each of its recipients."""

    def __init__(self, mime: bytes, domain: Domain, tracking: Tracking, codec: TokenCodec,
                 recipient_variables: dict[str, dict[str, Any]] | None = None) -> None:
        self._domain = domain
        self._tracking = tracking
        self._codec = codec
        self._rvars = recipient_variables
        msg = message_from_bytes(mime, _class=EmailMessage, policy=POLICY)
        assert isinstance(msg, EmailMessage)
        for name in CONTROL_HEADERS:
            del msg[name]
        self._msg = msg
        self._subject = str(msg.get("Subject", ""))
        # Batch sending shows each recipient only their own entry of the To header.
        self._to_entries = {address.lower(): format_mailboxes([(name, address)])
                            for name, address in getaddresses([str(msg.get("To", ""))])} \
            if recipient_variables else {}
        self._utf8 = _has_utf8_address(msg)
        self._parts: list[_Part] = []
        for part in msg.walk():
            if part.is_multipart() or part.get_content_disposition() == "attachment":
                continue
            assert isinstance(part, EmailMessage)
            if part.get_content_type() in ("text/html", "text/plain"):
                self._parts.append(_Part(part, part.get_content_type() == "text/html"))
        self._has_placeholder = any(_UNSUBSCRIBE_PLACEHOLDER.search(p.source)
                                    for p in self._parts)
        # RFC 8058 one-click unsubscribe whenever the message can unsubscribe anyone,
        # tracking or not; it replaces a List-Unsubscribe the sender's MIME brought.
        self._list_unsubscribe = (domain.list_unsubscribe or domain.unsubscribe_footer
                                  or self._has_placeholder)
        self._key = (dkim.DkimKey(domain.dkim_selector, domain.dkim_private_key)
                     if domain.dkim_selector and domain.dkim_private_key else None)
        # Each part analysed once for all recipients; only plain text with recipient
        # variables again per recipient (render).
        self._plans = [self._plan(p, p.source) for p in self._parts]

    def _plan(self, part: _Part, text: str) -> Any:
        if self._domain.unsubscribe_footer and not self._has_placeholder:
            text = _with_footer(text, part.html, self._domain)
        if part.html:
            return plan_html(text, _RECIPIENT_VAR if self._rvars else None)
        return plan_text(text) if self._tracking.clicks == "yes" else text

    def render(self, delivery_id: str, recipient: str) -> Composed:
        t = self._tracking
        variables = (self._rvars or {}).get(recipient.lower(), {}) if self._rvars else None
        tokens = self._codec.for_delivery(delivery_id)  # signs this delivery's tokens
        click_url: Callable[[Link], str] | None = None
        if t.clicks != "no":
            clicks = f"{t.base_url}/c/"

            def click_url(link: Link) -> str:
                return clicks + tokens.click(link.index, link.url)
        pixel = None
        if t.opens:
            pixel = f"{t.base_url}/o/{tokens.open()}"
        fill = self._placeholders(tokens)
        substitute = (None if variables is None
                      else partial(substitute_variables, variables=variables))
        for i, part in enumerate(self._parts):
            plan = self._plans[i]
            if substitute is not None and not part.html:
                plan = self._plan(part, substitute(part.source))
            if part.html:
                text = plan.render(click_url, pixel, t.pixel_top, substitute)
                if click_url is not None:
                    text = _with_honeypot(text, click_url(
                        Link(HONEYPOT_INDEX, f"https://{self._domain.name}/", "")))
            elif isinstance(plan, str):
                text = plan
            else:
                assert click_url is not None
                text = plan.render(click_url)
            _set_text(part.part, fill(text), "html" if part.html else "plain", part.charset,
                      root=part.part is self._msg)

        msg = self._msg
        if variables is not None:
            # Batch sending: each recipient sees only their own address and variables.
            _replace(msg, "To", self._to_entries.get(recipient.lower())
                     or format_mailboxes([("", recipient)]))
            _replace(msg, "Subject", substitute_variables(self._subject, variables))
        if self._list_unsubscribe:
            _replace(msg, "List-Unsubscribe",
                     f"<{fill('%unsubscribe_url%')}>, <mailto:{fill('%unsubscribe_email%')}>")
            _replace(msg, "List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
        _replace(msg, DELIVERY_HEADER, delivery_id)
        utf8 = self._utf8 or (variables is not None and needs_smtputf8(recipient))
        # POLICY refuses a header that would not stay one field (HeaderInjection), and
        # the header names parsed back must be the ones meant: a mismatch fails this
        # delivery, never relays it.
        data = msg.as_bytes(policy=UTF8_POLICY if utf8 else POLICY)
        verify_generated(data, msg.keys())
        if self._key is not None:
            data = dkim.sign(data, self._domain.name, self._key)
        return Composed(data, f"bounce+{tokens.bounce()}@{self._domain.verp_domain}")

    def _placeholders(self, tokens: DeliveryTokens) -> Callable[[str], str]:
        base, verp = self._tracking.base_url, self._domain.verp_domain

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name == "unsubscribe_email":
                return f"unsub+{tokens.unsubscribe()}@{verp}"
            return f"{base}/u/{tokens.unsubscribe(_SCOPES[name])}"

        return lambda text: _UNSUBSCRIBE_PLACEHOLDER.sub(replace, text)


def _has_utf8_address(msg: EmailMessage) -> bool:
    """Whether an address header has a non-ASCII local part (RFC 6532: UTF-8 headers)."""
    for name in ("From", "To", "Cc", "Reply-To", "Sender"):
        try:
            headers = msg.get_all(name) or ()
            if any(not a.username.isascii() for header in headers
                   for a in getattr(header, "addresses", ())):
                return True
        except Exception:  # noqa: BLE001 - unparsable: written out as it came, in ASCII
            continue
    return False


def _with_honeypot(html: str, url: str) -> str:
    """A link no person can see or reach: whatever follows it is a scanner (bots.py)."""
    link = (f'<a href="{url}" aria-hidden="true" tabindex="-1" style="display:none;'
            'font-size:0;line-height:0;max-height:0;overflow:hidden;mso-hide:all"></a>')
    end = html.lower().rfind("</body>")
    return html[:end] + link + html[end:] if end >= 0 else html + link


def substitute_variables(text: str, variables: dict[str, Any]) -> str:
    """%recipient.NAME% -> the recipient's value; unknown names become empty.

    >>> substitute_variables("Hi %recipient.first%%recipient.x%", {"first": "Al"})
    'Hi Al'
    """
    def value(match: re.Match[str]) -> str:
        found = variables.get(match.group(1), "")
        return found if isinstance(found, str) else str(found)

    return _RECIPIENT_VAR.sub(value, text)


def _with_footer(text: str, html: bool, domain: Domain) -> str:
    if not html:
        return text + (domain.footer_text or DEFAULT_FOOTER_TEXT)
    footer = domain.footer_html or DEFAULT_FOOTER_HTML
    end = text.lower().rfind("</body>")
    return text[:end] + footer + text[end:] if end >= 0 else text + footer


def _replace(msg: EmailMessage, name: str, value: str) -> None:
    del msg[name]
    msg[name] = value


def _set_text(part: EmailMessage, text: str, subtype: str, charset: str, root: bool) -> None:
    disposition = part.get("Content-Disposition")
    try:
        text.encode(charset)
    except (UnicodeEncodeError, LookupError):
        charset = "utf-8"
    part.set_content(text, subtype=subtype, charset=charset)
    if not root:
        del part["MIME-Version"]  # set_content adds it; it belongs on the top level only
    if disposition and "Content-Disposition" not in part:
        part["Content-Disposition"] = disposition

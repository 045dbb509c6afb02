"""Per-recipient MIME: the stored message with this recipient's tracking applied.

The stored MIME is parsed and its text parts analysed once per message (`Composer`);
each recipient then costs one render of each part with their own signed tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import SMTP

from mailbeacon.domains import Domain
from mailbeacon.send.submission import TrackingOptions
from mailbeacon.track.rewrite import HtmlPlan, Link, TextPlan, plan_html, plan_text
from mailbeacon.track.tokens import Kind, Token, TokenCodec

DELIVERY_HEADER = "X-Mailbeacon-Delivery"


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


class Composer:
    """Renders one stored message for each of its recipients."""

    def __init__(self, mime: bytes, tracking: Tracking, codec: TokenCodec) -> None:
        self._tracking = tracking
        self._codec = codec
        msg = message_from_bytes(mime, _class=EmailMessage, policy=SMTP)
        assert isinstance(msg, EmailMessage)
        self._msg = msg
        self._html: list[tuple[EmailMessage, str, HtmlPlan]] = []
        self._text: list[tuple[EmailMessage, str, TextPlan]] = []
        for part in msg.walk():
            if part.is_multipart() or part.get_content_disposition() == "attachment":
                continue
            assert isinstance(part, EmailMessage)
            charset = part.get_content_charset() or "utf-8"
            if part.get_content_type() == "text/html":
                self._html.append((part, charset, plan_html(part.get_content())))
            elif part.get_content_type() == "text/plain" and tracking.clicks == "yes":
                self._text.append((part, charset, plan_text(part.get_content())))

    def render(self, delivery_id: str) -> bytes:
        t = self._tracking
        click_url: Callable[[Link], str] | None = None
        if t.clicks != "no":
            def click_url(link: Link) -> str:
                token = Token(Kind.CLICK, delivery_id, link.index, link.url)
                return f"{t.base_url}/c/{self._codec.encode(token)}"
        pixel = None
        if t.opens:
            pixel = f"{t.base_url}/o/{self._codec.encode(Token(Kind.OPEN, delivery_id))}"
        for part, charset, html_plan in self._html:
            _set_text(part, html_plan.render(click_url, pixel, t.pixel_top), "html", charset)
        for part, charset, text_plan in self._text:
            assert click_url is not None
            _set_text(part, text_plan.render(click_url), "plain", charset)
        del self._msg[DELIVERY_HEADER]
        self._msg[DELIVERY_HEADER] = delivery_id
        return self._msg.as_bytes()


def _set_text(part: EmailMessage, text: str, subtype: str, charset: str) -> None:
    disposition = part.get("Content-Disposition")
    try:
        text.encode(charset)
    except (UnicodeEncodeError, LookupError):
        charset = "utf-8"
    part.set_content(text, subtype=subtype, charset=charset)
    del part["MIME-Version"]  # set_content adds it; it belongs on the top level only
    if disposition and "Content-Disposition" not in part:
        part["Content-Disposition"] = disposition

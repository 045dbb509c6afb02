"""`/u/<token>`: unsubscribe pages and RFC 8058 one-click unsubscribes (DESIGN 8).

GET shows a confirmation page and changes nothing: link scanners prefetch every link.
POST with `List-Unsubscribe=One-Click` (urlencoded or multipart, as mail providers send
it, and as the page's own button sends it) unsubscribes at once and answers 200, with no
redirect. A bad token gets a 404 page.
"""

from __future__ import annotations

import html
import logging

from starlette.requests import Request

from mailbeacon.errors import TokenError
from mailbeacon.model.clock import now_us
from mailbeacon.model.hit import Hit
from mailbeacon.model.tokens import Kind, TokenCodec
from mailbeacon.track.endpoints import Receive, Scope, Send, client_ip, header, respond
from mailbeacon.track.recorder import Recorder

log = logging.getLogger("mailbeacon.track")
_HTML = [(b"content-type", b"text/html; charset=utf-8"),
         (b"cache-control", b"no-store"), (b"x-robots-tag", b"noindex")]
_MAX_BODY = 64 * 1024


def _page(title: str, text: str, form_action: str | None = None) -> bytes:
    form = ""
    if form_action is not None:
        form = (f'<form method="post" action="{html.escape(form_action)}">'
                '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
                '<button type="submit">Unsubscribe</button></form>')
    return (f'<!doctype html><html><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width">'
            f"<title>{title}</title></head><body style=\"font-family:sans-serif;"
            f'max-width:32em;margin:3em auto"><h1>{title}</h1><p>{text}</p>{form}'
            f"</body></html>").encode()


class UnsubscribeEndpoint:
    def __init__(self, codec: TokenCodec, recorder: Recorder) -> None:
        self._codec = codec
        self._recorder = recorder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method: str = scope["method"]
        try:
            token = self._codec.decode(scope["path"][3:].split("/", 1)[0])
            if token.kind is not Kind.UNSUBSCRIBE:
                raise TokenError("not an unsubscribe token")
        except TokenError:
            await respond(send, 404, _HTML, _page("Link not found",
                                                  "This unsubscribe link is not valid."),
                          method)
            return
        if method in ("GET", "HEAD"):
            body = _page("Unsubscribe", "Do you want to stop receiving these emails?",
                         form_action=scope["path"])
            await respond(send, 200, _HTML, body, method)
            return
        if method != "POST":
            await respond(send, 405, [(b"allow", b"GET, HEAD, POST")], b"", method)
            return
        if not await _is_one_click(scope, receive):
            await respond(send, 400, _HTML, _page(
                "Not unsubscribed", "The request did not say List-Unsubscribe=One-Click."),
                method)
            return
        hit = Hit(Kind.UNSUBSCRIBE, token.delivery_id, now_us(),
                  client_ip(scope), header(scope, b"user-agent"), method, scope=token.scope)
        try:
            await self._recorder.record(hit)
        except Exception:
            log.exception("unsubscribe not recorded")
            await respond(send, 503, _HTML, _page(
                "Please try again", "Your request could not be saved just now."), method)
            return
        await respond(send, 200, _HTML, _page(
            "Unsubscribed", "You will not receive these emails any more."), method)


async def _is_one_click(scope: Scope, receive: Receive) -> bool:
    length = header(scope, b"content-length")
    if length.isdigit() and int(length) > _MAX_BODY:
        return False
    try:
        form = await Request(scope, receive).form(max_files=0, max_fields=20,
                                                  max_part_size=_MAX_BODY)
    except Exception:  # a malformed body is simply not a one-click request
        return False
    values = form.getlist("List-Unsubscribe")
    return any(isinstance(v, str) and v.strip() == "One-Click" for v in values)

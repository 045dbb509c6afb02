"""The HTML of a message is planned once, also with recipient variables (issue 19, 3)."""

from __future__ import annotations

import re
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from typing import Any

import pytest

from mailbeacon.domains.domain import Domain
from mailbeacon.model.ids import new_id
from mailbeacon.model.tokens import TokenCodec
from mailbeacon.send import compose
from mailbeacon.send.compose import Composer, Tracking
from mailbeacon.send.rewrite import Link, plan_html

CODEC = TokenCodec([b"test-key-0123456789abcdef"])
DOMAIN = Domain("example.com", new_id(), 0, True, "yes", False, None)
TRACKING = Tracking(True, "yes", False, "http://t.example.com")
HTML = ('<html><body><p title="%recipient.name%">Dear %recipient.name%,</p>'
        '<a href="https://shop.example.net/u?id=%recipient.id%&amp;x=1">account</a>'
        '<a href="%recipient.url%">yours</a><a href="https://shop.example.net/">shop</a>'
        "</body></html>")
PEOPLE: dict[str, dict[str, Any]] = {
    "a@example.org": {"name": "Ann", "id": "A1", "url": "https://a.example.org/p"},
    "b@example.org": {"name": "Bob & <Co>", "id": 7, "url": "mailto:b@example.org"},
    "c@example.org": {},
}


def _mime() -> bytes:
    msg = EmailMessage()
    msg["From"] = "shop@example.com"
    msg["To"] = ", ".join(PEOPLE)
    msg["Subject"] = "Hi %recipient.name%"
    msg.set_content("Hello %recipient.name%: https://shop.example.net/t?id=%recipient.id%")
    msg.add_alternative(HTML, subtype="html")
    return msg.as_bytes()


def _html_of(data: bytes) -> str:
    msg = message_from_bytes(data, _class=EmailMessage, policy=default)
    assert isinstance(msg, EmailMessage)
    body = msg.get_body(("html",))
    assert body is not None
    return str(body.get_content())


def _targets(html: str) -> list[str]:
    found = []
    for token in re.findall(r"http://t\.example\.com/c/([a-z0-9]+)", html):
        found.append(CODEC.decode(token).url)
    return found


def test_html_is_planned_once_for_every_recipient(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def counting(html: str, *args: Any) -> Any:
        calls.append(len(html))
        return plan_html(html, *args)

    monkeypatch.setattr(compose, "plan_html", counting)
    composer = Composer(_mime(), DOMAIN, TRACKING, CODEC, PEOPLE)
    for address in PEOPLE:
        composer.render(new_id(), address)
    assert len(calls) == 1


def test_each_recipient_gets_their_values_and_their_tracked_links() -> None:
    composer = Composer(_mime(), DOMAIN, TRACKING, CODEC, PEOPLE)
    ann = _html_of(composer.render(new_id(), "a@example.org").data)
    assert '<p title="Ann">Dear Ann,</p>' in ann
    assert _targets(ann)[:3] == ["https://shop.example.net/u?id=A1&x=1",
                                 "https://a.example.org/p", "https://shop.example.net/"]
    bob = _html_of(composer.render(new_id(), "b@example.org").data)
    assert "Dear Bob & <Co>," in bob  # inserted as given, as before
    assert '<a href="mailto:b@example.org">yours</a>' in bob  # filled in, not a URL to track
    assert _targets(bob)[:2] == ["https://shop.example.net/u?id=7&x=1",
                                 "https://shop.example.net/"]
    nobody = _html_of(composer.render(new_id(), "c@example.org").data)
    assert "Dear ," in nobody and "%recipient" not in nobody


def test_render_with_fill_keeps_everything_else_byte_exact() -> None:
    doc = '<a href="https://x.org/?id=%recipient.id%" class=c>%recipient.name%</a><p>x</p>'
    pattern = re.compile(r"%recipient\.([A-Za-z0-9_.\-]+)%")
    plan = plan_html(doc, pattern)
    assert plan.links == ()
    values = {"id": "42", "name": "Zoë"}

    def fill(text: str) -> str:
        return pattern.sub(lambda m: values[m.group(1)], text)

    def click(link: Link) -> str:
        return f"https://t.test/c/{link.index}?u={link.url}"

    assert plan.render(None, None, fill=fill) == fill(doc)
    assert plan.render(click, None, fill=fill) == (
        '<a href="https://t.test/c/0?u=https://x.org/?id=42" class=c>Zoë</a><p>x</p>')
    assert plan.render(click, None) == doc  # nothing filled in: left as written

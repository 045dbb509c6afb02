"""The header rules (send/headers.py), and the composer's check before relaying."""

from __future__ import annotations

from email.message import EmailMessage

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailbeacon.domains.domain import Domain
from mailbeacon.errors import BadRequest
from mailbeacon.model.ids import new_id
from mailbeacon.model.tokens import TokenCodec
from mailbeacon.send.compose import POLICY, Composer, Tracking
from mailbeacon.send.headers import (
    HeaderInjection,
    check_value,
    is_owned,
    mime_depth,
    safe_filename,
    verify_generated,
)

CONTROLS = ["\r", "\n", "\r\n", "\x00", "\x0b", "\x0c", "\x1c", "\x1e", "\x7f", "\x85",
            "\u2028", "\u2029"]
DOMAIN = Domain("example.com", "d1", 0, track_opens=True, track_clicks="yes",
                pixel_top=False, tracking_url=None)


@pytest.mark.parametrize("char", CONTROLS)
@pytest.mark.parametrize("name, template", [
    ("Subject", "Hi{c}X-Injected: 1"),
    ("Subject", "=?utf-8?q?Hi{q}X-Injected:_1?="),
    ("Subject", "=?utf-8?b?{b}?="),
    ("From", '"=?utf-8?q?E{q}X:_y?=" <shop@example.com>'),
    ("From", "=?utf-8?q?E{q}X:_y?= <shop@example.com>"),
    ("Content-Disposition", "attachment; filename*=utf-8''a{pct}X-I%3A%201"),
    ("Content-Disposition", 'attachment; filename="=?utf-8?q?a{q}X:_1?="'),
])
def test_control_characters_are_refused_after_decoding(char: str, name: str,
                                                       template: str) -> None:
    import base64

    raw = char.encode()
    value = template.format(
        c=char, q="".join(f"={b:02X}" for b in raw), pct="".join(f"%{b:02X}" for b in raw),
        b=base64.b64encode(b"Hi" + raw + b"X-Injected: 1").decode())
    with pytest.raises(BadRequest) as caught:
        check_value(f"'{name.lower()}' parameter", name, value)
    assert f"'{name.lower()}' parameter must not contain control characters" in caught.value.message


@pytest.mark.parametrize("value", ["Hello", "Grüße =?utf-8?q?Gr=C3=BC=C3=9Fe?=", "a\tb",
                                   "=?x-nope?q?unknown_charset?=", "用户 ünïcødé"])
def test_ordinary_values_pass(value: str) -> None:
    check_value("'subject' parameter", "Subject", value)


def test_recipient_is_named() -> None:
    with pytest.raises(BadRequest, match="for bob@example.org"):
        check_value("'recipient-variables'", "Subject", "x\ny", " for bob@example.org")


@pytest.mark.parametrize("name", ["Content-Type", "content-transfer-encoding", "MIME-Version",
                                  "DKIM-Signature", "ARC-Seal", "arc-message-signature",
                                  "Received", "Return-Path", "Authentication-Results",
                                  "List-Unsubscribe", "List-Unsubscribe-Post"])
def test_owned_headers(name: str) -> None:
    assert is_owned(name)


def test_custom_headers_are_not_owned() -> None:
    assert not is_owned("X-Campaign") and not is_owned("Reply-To") and not is_owned("Archive")


@pytest.mark.parametrize("given_name, safe", [
    ("report.pdf", "report.pdf"),
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\me\\secret.txt", "secret.txt"),
    ("a\x0bb.txt", "ab.txt"),
    ("in\r\nvoice.pdf", "invoice.pdf"),
    ("invoice\u202efdp.exe", "invoicefdp.exe"),
    ("=?utf-8?q?a=0D=0AX-Injected:_1.txt?=", "aX-Injected: 1.txt"),
    ("..", "attachment"),
    ("", "attachment"),
])
def test_safe_filename(given_name: str, safe: str) -> None:
    assert safe_filename(given_name) == safe


@given(st.text())
def test_safe_filename_has_no_path_or_control(name: str) -> None:
    safe = safe_filename(name)
    assert safe and "/" not in safe and "\\" not in safe
    assert not any(c in safe for c in CONTROLS)


def test_verify_generated() -> None:
    data = b"From: a@example.com\r\nSubject: hi\r\n folded\r\n\r\nbody\r\nX-Not: header\r\n"
    verify_generated(data, ["From", "Subject"])
    with pytest.raises(HeaderInjection, match="x-injected"):
        verify_generated(b"From: a\r\nX-Injected: 1\r\n\r\n", ["From"])
    with pytest.raises(HeaderInjection):
        verify_generated(b"From: a\r\nno colon here\r\n\r\n", ["From"])


def test_mime_depth() -> None:
    msg = EmailMessage()
    msg.set_content("x")
    assert mime_depth(msg) == 1
    outer = msg
    for _ in range(60):
        wrapper = EmailMessage()
        wrapper.make_mixed()
        wrapper.attach(outer)
        outer = wrapper
    assert mime_depth(outer) > 50  # counted without recursion, stopped past the limit


def _composer(header: bytes, rvars: dict[str, dict[str, str]] | None = None) -> Composer:
    stored = (b"From: shop@example.com\r\nTo: alice@example.org\r\n" + header +
              b"\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nhello\r\n")
    return Composer(stored, DOMAIN, Tracking(True, "yes", False, "http://t.example"),
                    TokenCodec([b"k" * 32]), rvars)


@pytest.mark.parametrize("char", [b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e"])
def test_composer_never_renders_an_injected_header(char: bytes) -> None:
    """A stored message that slipped past intake (or was stored before these checks)
    fails its delivery at compose: `splitlines`, which the email package folds with,
    makes a line break of \\x0b, \\x0c and \\x1c-\\x1e."""
    with pytest.raises(HeaderInjection, match="Subject"):
        _composer(b"Subject: hi" + char + b"X-Injected: 1").render(new_id(), "alice@example.org")


def test_composer_never_renders_a_decoded_line_break() -> None:
    """CVE-2024-6923: a header made from text holding an encoded word with CR LF (here a
    recipient variable in the subject) is written with a real line break by Python's
    email package before 3.11.10."""
    composer = _composer(b"Subject: Hello %recipient.n%",
                         {"alice@example.org": {"n": "=?utf-8?q?x=0D=0AX-Injected:_1?="}})
    with pytest.raises(HeaderInjection):
        composer.render(new_id(), "alice@example.org")


def test_composer_renders_ordinary_headers() -> None:
    composed = _composer(b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= %recipient.n%",
                         {"alice@example.org": {"n": "Alice"}}).render(new_id(),
                                                                        "alice@example.org")
    assert b"X-Injected" not in composed.data


def test_policy_folds_ordinary_headers() -> None:
    msg = EmailMessage(policy=POLICY)
    msg["Subject"] = "A long subject " * 20
    msg["To"] = "Jöhn <john@example.org>"
    msg.set_content("x")
    data = msg.as_bytes()
    verify_generated(data, msg.keys())

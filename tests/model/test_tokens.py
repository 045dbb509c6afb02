"""The token codec: signed, compact, case-insensitive, rotatable."""

from __future__ import annotations

import base64
import hashlib
import hmac
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailbeacon.errors import TokenError
from mailbeacon.model.ids import id_to_bytes, new_id
from mailbeacon.model.tokens import _TAIL_CACHE, Kind, Token, TokenCodec, b32encode, key_id

OLD, NEW = b"old-secret-key-0123456789", b"new-secret-key-9876543210"
codec = TokenCodec([OLD])
DELIVERY = new_id()


def test_round_trip_of_each_kind() -> None:
    for token in (Token(Kind.OPEN, DELIVERY),
                  Token(Kind.CLICK, DELIVERY, 7, "https://example.net/a?b=1&c=%20"),
                  Token(Kind.UNSUBSCRIBE, DELIVERY, scope="tag:news")):
        text = codec.encode(token)
        assert text == text.lower() and text.isalnum()
        assert codec.decode(text) == token
        assert codec.decode(text.upper()) == token


def test_long_urls_are_compressed() -> None:
    url = "https://example.net/" + "campaign/" * 40 + "?utm_source=newsletter" * 3
    text = codec.encode(Token(Kind.CLICK, DELIVERY, 1, url))
    assert len(text) < len(url)
    assert codec.decode(text).url == url


def test_recipient_is_not_in_the_token() -> None:
    """Only the delivery id identifies the recipient: no address goes into a link."""
    assert set(Token._fields) == {
        "kind", "delivery_id", "link_index", "url", "scope"}
    text = codec.encode(Token(Kind.OPEN, DELIVERY)).upper()
    raw = base64.b32decode(text + "=" * (-len(text) % 8))
    assert len(raw) == 3 + 16 + 16  # header, delivery id, MAC: nothing else


@pytest.mark.parametrize("mutate", [
    lambda t: t[:-1],  # truncated by one character
    lambda t: t[:-10],
    lambda t: t[:12],
    lambda t: t + "a",
    lambda t: t[:8] + ("b" if t[8] == "a" else "a") + t[9:],  # payload altered
    lambda t: t[:-3] + ("b" if t[-3] == "a" else "a") + t[-2:],  # MAC altered
    lambda t: "",
    lambda t: "!" * len(t),
    lambda t: "1" * len(t),  # '1' is not base32
    lambda t: "a" * 5000,
])
def test_tampered_tokens_are_refused(mutate: object) -> None:
    text = codec.encode(Token(Kind.CLICK, DELIVERY, 2, "https://example.net/x"))
    with pytest.raises(TokenError):
        codec.decode(mutate(text))  # type: ignore[operator]


def test_forgery_with_another_key_fails() -> None:
    forged = TokenCodec([b"attacker-key-0123456789"]).encode(
        Token(Kind.CLICK, DELIVERY, 0, "https://evil.example/"))
    with pytest.raises(TokenError):
        codec.decode(forged)


def test_changing_the_url_breaks_the_signature() -> None:
    text = codec.encode(Token(Kind.CLICK, DELIVERY, 0, "https://a.example/")).upper()
    good = base64.b32decode(text + "=" * (-len(text) % 8))
    bad = good.replace(b"https://a.example/", b"https://b.example/")
    assert bad != good
    with pytest.raises(TokenError):
        codec.decode(base64.b32encode(bad).decode().rstrip("=").lower())


def test_key_rotation() -> None:
    old_token = TokenCodec([OLD]).encode(Token(Kind.OPEN, DELIVERY))
    rotated = TokenCodec([NEW, OLD])
    assert rotated.decode(old_token) == Token(Kind.OPEN, DELIVERY)  # old key still verifies
    new_token = rotated.encode(Token(Kind.OPEN, DELIVERY))
    assert new_token != old_token
    assert TokenCodec([NEW]).decode(new_token) == Token(Kind.OPEN, DELIVERY)  # new key signs
    with pytest.raises(TokenError):
        TokenCodec([OLD]).decode(new_token)
    with pytest.raises(TokenError):
        TokenCodec([NEW]).decode(old_token)  # once the old key is dropped


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError):
        TokenCodec([b"short"])
    with pytest.raises(ValueError):
        TokenCodec([])


@given(index=st.integers(0, 65535), url=st.text(max_size=300),
       scope=st.text(max_size=50), upper=st.booleans())
def test_any_payload_round_trips(index: int, url: str, scope: str, upper: bool) -> None:
    for token in (Token(Kind.CLICK, DELIVERY, index, url),
                  Token(Kind.UNSUBSCRIBE, DELIVERY, scope=scope)):
        text = codec.encode(token)
        assert codec.decode(text.upper() if upper else text) == token


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz234567", max_size=200))
def test_random_base32_never_verifies(text: str) -> None:
    with pytest.raises(TokenError):
        codec.decode(text)


def _reference(key: bytes, token: Token) -> str:
    """The token layout of the module docstring, written out with the standard library
    only: tokens sent before the fast signer must stay the tokens it makes."""
    if token.kind is Kind.CLICK:
        tail = token.link_index.to_bytes(2, "big") + token.url.encode()
    elif token.kind is Kind.UNSUBSCRIBE:
        tail = token.scope.encode()
    else:
        tail = b""
    kind = int(token.kind)
    if len(tail) > 48:
        packer = zlib.compressobj(9, zlib.DEFLATED, 9, 1)
        packed = packer.compress(tail) + packer.flush()
        if len(packed) < len(tail):
            tail, kind = packed, kind | 0x80
    body = bytes([1, key_id(key), kind]) + id_to_bytes(token.delivery_id) + tail
    mac = hmac.new(key, body, hashlib.sha256).digest()[:16]
    return base64.b32encode(body + mac).decode().rstrip("=").lower()


@given(index=st.integers(0, 65535), url=st.text(max_size=300), scope=st.text(max_size=50),
       key=st.binary(min_size=16, max_size=100))
def test_tokens_are_those_of_the_reference_layout(index: int, url: str, scope: str,
                                                  key: bytes) -> None:
    """Byte for byte, by codec.encode and by the per-delivery signer, for any key length
    (over 64 bytes HMAC hashes the key first)."""
    signer, delivery = TokenCodec([key]), new_id()
    tokens = signer.for_delivery(delivery)
    click = Token(Kind.CLICK, delivery, index, url)
    unsubscribe = Token(Kind.UNSUBSCRIBE, delivery, scope=scope)
    assert signer.encode(click) == tokens.click(index, url) == _reference(key, click)
    assert tokens.click(index, url) == _reference(key, click)  # from the payload cache
    assert (signer.encode(unsubscribe) == tokens.unsubscribe(scope)
            == _reference(key, unsubscribe))
    for kind, made in ((Kind.OPEN, tokens.open()), (Kind.BOUNCE, tokens.bounce())):
        assert made == _reference(key, Token(kind, delivery))
        assert signer.decode(made) == Token(kind, delivery)


def test_tokens_made_by_an_earlier_version_still_decode() -> None:
    """Links already in people's mailboxes (made by the release before the fast signer)."""
    old, delivery = TokenCodec([b"key-of-an-earlier-release-0123"]), "0123456789abcdefghijklmn00"
    click = ("ahjqeacegikmoqsuwy247bdfhjlnoaaaanuhi5dqom5c6l3tnbxxaltfpbqw24dmmuxgg33nf5yc6mz7"
             "ov2g2x3tn52xey3fhvxgk53tez2xi3k7nvswi2lvnu6wk3lbnfwc5murgt3s3dqvi2bx75ujborj6")
    url = "https://shop.example.com/p/3?utm_source=news&utm_medium=email"
    assert old.decode(click) == Token(Kind.CLICK, delivery, 3, url)
    assert old.encode(Token(Kind.CLICK, delivery, 3, url)) == click
    opened = "ahjqcacegikmoqsuwy247bdfhjlnoagqyypu73k567vrc7kh7m6b5m2d"
    assert old.decode(opened) == Token(Kind.OPEN, delivery)
    assert old.for_delivery(delivery).open() == opened


@given(st.binary(max_size=600))
def test_b32encode_is_base64s(data: bytes) -> None:
    assert b32encode(data) == base64.b32encode(data).decode().rstrip("=").lower()


def test_link_payloads_remembered_are_bounded() -> None:
    fresh = TokenCodec([OLD])
    signer = fresh.for_delivery(DELIVERY)
    for index in range(_TAIL_CACHE * 2 + 5):
        signer.click(index % 65536, f"https://example.net/{index}")
    assert 0 < len(fresh._tails) <= _TAIL_CACHE

"""Signed, self-contained tracking tokens (DESIGN section 4).

A token names one delivery (message x recipient) and what the hit means: an open, a click
on link N going to URL U, or an unsubscribe with its scope. Nothing needs to be read from
the database to answer a hit, and nobody can make a token we did not sign.

Layout before encoding::

    version(1) key-id(1) kind(1) delivery-id(16) [link-index(2) url | scope]  mac(16)

The MAC is HMAC-SHA256 truncated to 128 bits over everything before it. The key id
selects the verifying key, so keys rotate: the newest key signs, older keys still verify.
Encoding is lowercase base32 without padding, because some clients and link scanners
lowercase URLs, and a token must survive that. The recipient address is deliberately
not in the token: links end up in proxy logs, and a delivery id reveals nothing.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import re
import zlib
from collections.abc import Sequence
from typing import NamedTuple

from mailbeacon.errors import TokenError
from mailbeacon.model.ids import id_from_bytes, id_to_bytes

VERSION = 1
MAC_BYTES = 16
_HEADER = 3 + 16
_COMPRESSED = 0x80  # kind flag: the tail is zlib-compressed
_MAX_TOKEN_CHARS = 4096


class Kind(enum.IntEnum):
    OPEN = 1
    CLICK = 2
    UNSUBSCRIBE = 3
    BOUNCE = 4  # the VERP envelope sender: bounces come back to bounce+<token>@...


class Token(NamedTuple):  # a tuple: made on every tracking hit, several times cheaper
    kind: Kind
    delivery_id: str
    link_index: int = 0
    url: str = ""
    scope: str = ""  # unsubscribe scope: "" the domain, "tag" the message's tags, "list"


def key_id(key: bytes) -> int:
    """One byte naming a key; collisions only cost an extra HMAC at verification."""
    return hashlib.sha256(b"mailbeacon-key-id" + key).digest()[0]


class TokenCodec:
    """Signs tokens with `keys[0]`, verifies with any of `keys`."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys or any(len(k) < 16 for k in keys):
            raise ValueError("token keys must be at least 16 bytes")
        self._key_bytes = tuple(keys)
        # Keyed HMAC states, copied per token: the key schedule is computed once.
        self._sign = hmac.new(keys[0], digestmod=hashlib.sha256)
        self._sign_id = key_id(keys[0])
        self._keys: dict[int, list[hmac.HMAC]] = {}
        for key in keys:
            self._keys.setdefault(key_id(key), []).append(
                hmac.new(key, digestmod=hashlib.sha256))

    def __reduce__(self) -> tuple[type[TokenCodec], tuple[tuple[bytes, ...]]]:
        # HMAC states do not pickle; a composing process rebuilds them from the keys.
        return (TokenCodec, (self._key_bytes,))

    def encode(self, token: Token) -> str:
        if token.kind is Kind.CLICK:
            if not 0 <= token.link_index < 65536:
                raise ValueError("link index out of range")
            tail = token.link_index.to_bytes(2, "big") + token.url.encode("utf-8")
        elif token.kind is Kind.UNSUBSCRIBE:
            tail = token.scope.encode("utf-8")
        else:
            tail = b""
        kind = int(token.kind)
        if len(tail) > 48:
            packed = _compress(tail)
            if len(packed) < len(tail):
                tail, kind = packed, kind | _COMPRESSED
        body = bytes([VERSION, self._sign_id, kind]) + id_to_bytes(token.delivery_id) + tail
        mac = _mac(self._sign, body)
        return base64.b32encode(body + mac).decode("ascii").rstrip("=").lower()

    def decode(self, text: str) -> Token:
        """The token's content, or TokenError when it is malformed, forged or altered."""
        if not 0 < len(text) <= _MAX_TOKEN_CHARS:
            raise TokenError("token has a wrong length")
        raw = _b32decode(text)
        if len(raw) < _HEADER + MAC_BYTES or raw[0] != VERSION:
            raise TokenError("token is truncated or of an unknown version")
        body, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
        for key in self._keys.get(body[1], ()):
            if hmac.compare_digest(_mac(key, body), mac):
                return _unpack(body)
        raise TokenError("token signature does not verify")


def _mac(keyed: hmac.HMAC, body: bytes) -> bytes:
    state = keyed.copy()
    state.update(body)
    return state.digest()[:MAC_BYTES]


_FROM_B32 = str.maketrans("abcdefghijklmnopqrstuvwxyz234567", "0123456789abcdefghijklmnopqrstuv")
_B32_TEXT = re.compile(r"[a-z2-7]+")


def _b32decode(text: str) -> bytes:
    """Unpadded base32 (any case) to bytes, strictly. Decoding is on every tracking hit:
    mapped onto int()'s base-32 digits, it is several times faster than base64's."""
    text = text.lower()
    if not _B32_TEXT.fullmatch(text):
        raise TokenError("token is not base32")
    bits = len(text) * 5
    size, pad = divmod(bits, 8)
    value = int(text.translate(_FROM_B32), 32)
    if size == 0 or value & ((1 << pad) - 1) or len(text) % 8 in (1, 3, 6):
        raise TokenError("token is not base32")  # leftover bits, as base64 would refuse
    return (value >> pad).to_bytes(size, "big")


def _compress(data: bytes) -> bytes:
    # A small window: tails are short, and zlib's default state costs ~50 µs to set up.
    packer = zlib.compressobj(9, zlib.DEFLATED, 9, 1)
    return packer.compress(data) + packer.flush()


_KINDS = {int(kind): kind for kind in Kind}  # faster than calling Kind() on every hit


def _unpack(body: bytes) -> Token:
    kind_byte, delivery, tail = body[2], body[3:_HEADER], body[_HEADER:]
    if kind_byte & _COMPRESSED:
        try:
            tail = zlib.decompress(tail)
        except zlib.error as exc:
            raise TokenError("token payload is corrupt") from exc
    try:
        kind = _KINDS[kind_byte & ~_COMPRESSED]
        delivery_id = id_from_bytes(delivery)
        if kind is Kind.CLICK:
            if len(tail) < 2:
                raise TokenError("click token has no link")
            return Token(kind, delivery_id, int.from_bytes(tail[:2], "big"), tail[2:].decode())
        if kind is Kind.UNSUBSCRIBE:
            return Token(kind, delivery_id, scope=tail.decode())
        return Token(kind, delivery_id)
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        raise TokenError("token payload is corrupt") from exc

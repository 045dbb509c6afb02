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
_SHA256_BLOCK = 64
_TAIL_CACHE = 4096  # link payloads remembered (index and URL): a few messages' links
_TAIL_CACHED_CHARS = 2048


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
        self._signing = _Mac(keys[0])
        self._header = bytes((VERSION, key_id(keys[0])))
        self._tails: dict[tuple[int, str] | str, tuple[int, bytes]] = {}
        self._keys: dict[int, list[_Mac]] = {}
        for key in keys:
            self._keys.setdefault(key_id(key), []).append(_Mac(key))

    def __reduce__(self) -> tuple[type[TokenCodec], tuple[tuple[bytes, ...]]]:
        # HMAC states do not pickle; a composing process rebuilds them from the keys.
        return (TokenCodec, (self._key_bytes,))

    def encode(self, token: Token) -> str:
        return self._sign(id_to_bytes(token.delivery_id), *self._tail(token))

    def for_delivery(self, delivery_id: str) -> DeliveryTokens:
        """A signer of this one delivery's tokens, for composing its message: the id is
        converted once, and link payloads are shared by all recipients of a message."""
        return DeliveryTokens(self, delivery_id)

    def _sign(self, delivery: bytes, kind: int, tail: bytes) -> str:
        body = self._header + bytes((kind,)) + delivery + tail
        return b32encode(body + self._signing.mac(body))

    def _tail(self, token: Token) -> tuple[int, bytes]:
        """The kind byte and the payload after the delivery id. A link's payload is the
        same for every recipient of a message: remembered (bounded), not compressed again."""
        if token.kind is Kind.CLICK:
            key: tuple[int, str] | str = (token.link_index, token.url)
        elif token.kind is Kind.UNSUBSCRIBE:
            key = token.scope
        else:
            return int(token.kind), b""
        found = self._tails.get(key)
        if found is None:
            found = _tail(token)
            if len(token.url) + len(token.scope) <= _TAIL_CACHED_CHARS:  # a few MB at most
                if len(self._tails) >= _TAIL_CACHE:
                    self._tails.clear()
                self._tails[key] = found
        return found

    def decode(self, text: str) -> Token:
        """The token's content, or TokenError when it is malformed, forged or altered."""
        if not 0 < len(text) <= _MAX_TOKEN_CHARS:
            raise TokenError("token has a wrong length")
        raw = _b32decode(text)
        if len(raw) < _HEADER + MAC_BYTES or raw[0] != VERSION:
            raise TokenError("token is truncated or of an unknown version")
        body, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
        for key in self._keys.get(body[1], ()):
            if hmac.compare_digest(key.mac(body), mac):
                return _unpack(body)
        raise TokenError("token signature does not verify")


class DeliveryTokens:
    """The tokens of one delivery, signed with the codec's current key."""

    __slots__ = ("_codec", "_delivery", "delivery_id")

    def __init__(self, codec: TokenCodec, delivery_id: str) -> None:
        self._codec = codec
        self._delivery = id_to_bytes(delivery_id)
        self.delivery_id = delivery_id

    def click(self, link_index: int, url: str) -> str:
        codec = self._codec
        found = codec._tails.get((link_index, url))
        if found is None:
            found = codec._tail(Token(Kind.CLICK, self.delivery_id, link_index, url))
        return codec._sign(self._delivery, *found)

    def open(self) -> str:
        return self._codec._sign(self._delivery, Kind.OPEN, b"")

    def bounce(self) -> str:
        return self._codec._sign(self._delivery, Kind.BOUNCE, b"")

    def unsubscribe(self, scope: str = "") -> str:
        found = self._codec._tail(Token(Kind.UNSUBSCRIBE, self.delivery_id, scope=scope))
        return self._codec._sign(self._delivery, *found)


def _tail(token: Token) -> tuple[int, bytes]:
    if token.kind is Kind.CLICK:
        if not 0 <= token.link_index < 65536:
            raise ValueError("link index out of range")
        tail = token.link_index.to_bytes(2, "big") + token.url.encode("utf-8")
    else:
        tail = token.scope.encode("utf-8")
    kind = int(token.kind)
    if len(tail) > 48:
        packed = _compress(tail)
        if len(packed) < len(tail):
            tail, kind = packed, kind | _COMPRESSED
    return kind, tail


class _Mac:
    """HMAC-SHA256 (RFC 2104) truncated to MAC_BYTES, from the two keyed SHA-256 states
    computed once: a token costs two state copies, half of hmac.HMAC.copy()'s Python
    layers (test_tokens checks it against hmac.new)."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > _SHA256_BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_SHA256_BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def mac(self, body: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(body)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:MAC_BYTES]


_B32_ALPHABET = b"abcdefghijklmnopqrstuvwxyz234567"
_TO_B32 = bytes.maketrans(bytes(range(32)), _B32_ALPHABET)
_SPREADS: dict[int, tuple[tuple[int, int, int], ...]] = {}
_SPREAD_MAX = 2048  # characters; longer (never in practice) goes through base64


def b32encode(data: bytes) -> str:
    """Lowercase unpadded base32, as base64.b32encode(data).rstrip("=").lower() but
    several times faster (that one is pure Python, 10 µs a token): the bits are spread
    5 to a byte with a few whole-number masks and shifts, then mapped onto the alphabet."""
    digits, left = divmod(len(data) * 8, 5)
    value = int.from_bytes(data, "big")
    if left:
        digits += 1
        value <<= 5 - left
    if digits > _SPREAD_MAX:
        return base64.b32encode(data).decode("ascii").rstrip("=").lower()
    steps = _SPREADS.get(digits)
    if steps is None:
        steps = _SPREADS[digits] = _spread_steps(digits)
    for keep, move, shift in steps:
        value = (value & keep) | ((value & move) << shift)
    return value.to_bytes(digits, "big").translate(_TO_B32).decode("ascii")


def _spread_steps(digits: int) -> tuple[tuple[int, int, int], ...]:
    """Masks moving digit i (counted from the right) from bit 5i to bit 8i: by 3i bits,
    in steps of 3 * 2**s for each bit s of i, highest first, so no two digits collide."""
    steps = []
    for s in reversed(range((digits - 1).bit_length())):
        keep = move = 0
        for i in range(digits):
            at = 5 * i + 3 * (i >> (s + 1) << (s + 1))  # after the higher steps
            if i >> s & 1:
                move |= 0x1F << at
            else:
                keep |= 0x1F << at
        steps.append((keep, move, 3 << s))
    return tuple(steps)


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

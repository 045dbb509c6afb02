"""Webhook signatures, exactly as Mailgun makes them, so Mailgun receivers verify them.

signature = hex HMAC-SHA256(signing key, timestamp + token), sent with the timestamp
and a 50-character random token in the payload's `signature` object.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import time

_TOKEN_ALPHABET = string.ascii_lowercase + string.digits


def new_signing_key() -> str:
    return "key-" + secrets.token_hex(16)


def sign(key: str, timestamp: str, token: str) -> str:
    return hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()


def signature_block(key: str, now: float | None = None) -> dict[str, str]:
    timestamp = str(int(time.time() if now is None else now))
    token = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(50))
    return {"timestamp": timestamp, "token": token, "signature": sign(key, timestamp, token)}


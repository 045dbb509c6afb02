"""DKIM keys and signatures (dkimpy, cryptography).

`generate_key` makes an RSA key pair; `dns_record` is the TXT record to publish at
`<selector>._domainkey.<domain>`; `sign` adds a DKIM-Signature to an outgoing message.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailbeacon.errors import BadRequest

# What the signature covers: what a recipient reads and what unsubscribes them (RFC 8058
# asks that List-Unsubscribe and List-Unsubscribe-Post be signed).
SIGNED_HEADERS = (
    b"From", b"To", b"Cc", b"Subject", b"Date", b"Message-ID", b"Reply-To",
    b"List-Unsubscribe", b"List-Unsubscribe-Post", b"MIME-Version", b"Content-Type",
)
_SELECTOR = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class DkimKey:
    selector: str
    private_pem: str

    def public_b64(self) -> str:
        key = serialization.load_pem_private_key(self.private_pem.encode(), password=None)
        der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(der).decode("ascii")


def check_selector(selector: str) -> str:
    selector = selector.strip().lower()
    if not _SELECTOR.match(selector):
        raise BadRequest("DKIM selector must be a DNS label: letters, digits and '-'")
    return selector


def generate_key(selector: str, bits: int = 2048) -> DkimKey:
    if bits not in (1024, 2048, 3072, 4096):
        raise BadRequest("DKIM key size must be 1024, 2048, 3072 or 4096 bits")
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode("ascii")
    return DkimKey(check_selector(selector), pem)


def dns_name(domain: str, selector: str) -> str:
    return f"{selector}._domainkey.{domain}"


def dns_record(key: DkimKey) -> str:
    """The TXT record value: `v=DKIM1; k=rsa; p=<public key>`."""
    return f"v=DKIM1; k=rsa; p={key.public_b64()}"


def txt_strings(value: str) -> str:
    """A TXT value as quoted strings of at most 255 characters, as DNS needs."""
    return " ".join(f'"{value[i:i + 255]}"' for i in range(0, len(value), 255))


def sign(message: bytes, domain: str, key: DkimKey) -> bytes:
    """The message with a DKIM-Signature header in front (relaxed/relaxed)."""
    header = dkim.sign(
        message, key.selector.encode(), domain.encode(), key.private_pem.encode(),
        canonicalize=(b"relaxed", b"relaxed"), include_headers=list(SIGNED_HEADERS),
    )
    return bytes(header) + message

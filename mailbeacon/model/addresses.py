"""Email addresses as users write them: parsed, checked, normalised."""

from __future__ import annotations

from collections.abc import Iterable
from email.headerregistry import Address
from email.utils import formataddr, getaddresses

import idna
from email_validator import EmailNotValidError, validate_email

from mailbeacon.errors import BadRequest


def check_address(address: str, field: str) -> str:
    """The address in canonical form (domain lowercased), or BadRequest naming the field."""
    try:
        valid = validate_email(address, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError as exc:
        raise BadRequest(f"'{field}' parameter is not a valid address: {address!r} ({exc})"
                         ) from exc
    return valid.normalized


def parse_mailboxes(values: Iterable[str], field: str) -> list[tuple[str, str]]:
    """(display name, address) pairs from header-style values, several per value allowed.

    >>> parse_mailboxes(["Bob <bob@example.com>, carol@example.com"], "to")
    [('Bob', 'bob@example.com'), ('', 'carol@example.com')]
    """
    found: list[tuple[str, str]] = []
    for value in values:
        if "\r" in value or "\n" in value:
            raise BadRequest(f"'{field}' parameter must not contain line breaks")
        if not value.strip():
            continue
        pairs = getaddresses([value])
        if not pairs or any(not addr or "@" not in addr for _, addr in pairs):
            raise BadRequest(f"'{field}' parameter is not a valid address: {value!r}")
        found.extend((name, check_address(addr, field)) for name, addr in pairs)
    return found


def format_mailboxes(pairs: Iterable[tuple[str, str]]) -> str:
    """A header value: domains in IDNA (ASCII); a non-ASCII local part stays UTF-8, and
    the message then needs SMTPUTF8 (RFC 6532 headers, see `needs_smtputf8`).

    >>> format_mailboxes([("Bob", "bob@例子.广告")])
    'Bob <bob@xn--fsqu00a.xn--4rr70v>'
    """
    formatted = []
    for name, address in pairs:
        local, _, domain = ascii_domain(address).rpartition("@")
        if local.isascii():
            formatted.append(formataddr((name, f"{local}@{domain}")))
        else:
            formatted.append(str(Address(name, local, domain)))
    return ", ".join(formatted)


def ascii_domain(address: str) -> str:
    """The address with its domain in IDNA A-labels (unchanged if it cannot be).

    >>> ascii_domain("用户@例子.广告")
    '用户@xn--fsqu00a.xn--4rr70v'
    """
    local, at, domain = address.rpartition("@")
    if not at or domain.isascii():
        return address
    try:
        return f"{local}@{idna.encode(domain, uts46=True).decode('ascii')}"
    except idna.IDNAError:
        return address


def needs_smtputf8(address: str) -> bool:
    """Whether an address can only travel with SMTPUTF8 (RFC 6531): a non-ASCII local
    part (a non-ASCII domain is written in IDNA instead)."""
    return not address.rpartition("@")[0].isascii()

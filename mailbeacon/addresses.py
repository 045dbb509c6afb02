"""Email addresses as users write them: parsed, checked, normalised."""

from __future__ import annotations

from collections.abc import Iterable
from email.utils import formataddr, getaddresses

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
    return ", ".join(formataddr(pair) for pair in pairs)

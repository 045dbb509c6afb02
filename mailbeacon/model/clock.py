"""Time as mailbeacon stores and shows it: microseconds since the epoch (UTC).

One place for the clock and for the two date formats of the APIs (RFC 2822, as Mailgun
writes them, and epoch seconds), so every API parses and writes dates alike.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import formatdate, parsedate_to_datetime
from typing import overload

from mailbeacon.errors import BadRequest

_EPOCH = re.compile(r"[0-9]{1,15}(?:\.[0-9]{0,18})?")
MAX_SECONDS = 253402300800  # 10000-01-01: keeps every bound a valid datetime and BigInteger


def now_us() -> int:
    """Now, in microseconds since the epoch."""
    return time.time_ns() // 1000


@overload
def rfc2822(micros: int | float) -> str: ...
@overload
def rfc2822(micros: None) -> None: ...
@overload
def rfc2822(micros: int | float | None) -> str | None: ...
def rfc2822(micros: int | float | None) -> str | None:
    """'Fri, 04 Dec 2026 18:42:40 GMT' (None stays None), as Mailgun's APIs write dates."""
    return None if micros is None else formatdate(micros / 1_000_000, usegmt=True)


def shown(micros: int | float | None) -> str:
    """'2026-12-04 18:42:40' (UTC) for people: the dashboard and the CLI."""
    if micros is None:
        return "—"
    return datetime.fromtimestamp(micros / 1_000_000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _rfc2822_seconds(text: str) -> int | None:
    try:
        parsed = parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, OverflowError):
        return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:  # "-0000": RFC 2822's "zone unknown", UTC by convention
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp())  # RFC 2822 has whole seconds: exact


def parse_rfc2822(value: str, field: str) -> int:
    """An RFC 2822 date (e.g. 'Fri, 21 Oct 2011 11:02:55 UTC') in µs, or BadRequest
    naming `field`."""
    seconds = _rfc2822_seconds(value)
    if seconds is None:
        raise BadRequest(f"'{field}' must be an RFC 2822 date such as "
                         f"'Fri, 21 Oct 2011 11:02:55 UTC', got {value!r}")
    if not 0 <= seconds < MAX_SECONDS:
        raise BadRequest(f"'{field}' must be a date between 1970 and 9999, got {value!r}")
    return seconds * 1_000_000


def parse_moment(text: str, field: str) -> Decimal:
    """Epoch seconds (fractions allowed) or an RFC 2822 date, as exact microseconds (not
    yet rounded), or BadRequest naming `field`: the Events and Stats APIs' begin/end."""
    if _EPOCH.fullmatch(text):
        seconds = Decimal(text)
    else:
        whole = _rfc2822_seconds(text)
        if whole is None:
            raise BadRequest(f"{field} must be an RFC 2822 date or epoch seconds, got {text!r}")
        seconds = Decimal(whole)
    if not 0 <= seconds < MAX_SECONDS:
        raise BadRequest(f"{field} must be a date between 1970 and 9999")
    return seconds * 1_000_000

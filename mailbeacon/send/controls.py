"""Sending options carried in message headers (SMTP submission, messages.mime).

An app that sends through SMTP steers mailbeacon with Mailgun's control headers
(`X-Mailgun-Tag`, `X-Mailgun-Track`, ...) or the same names with `X-Mailbeacon-`. They are
read here and removed from the message, without touching any other byte of it. On
messages.mime, the API's fields (`Overrides`) win over the headers.
"""

from __future__ import annotations

import datetime
import json
import re
import time
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.utils import parsedate_to_datetime
from typing import Any

from mailbeacon.domains.domain import parse_bool, parse_click_mode
from mailbeacon.errors import BadRequest
from mailbeacon.send.options import DeliveryOptions, TrackingOptions

# Furthest in the future a delivery may be scheduled (Mailgun allows 3 to 7 days).
MAX_SCHEDULE_SECONDS = 7 * 24 * 3600
_CONTROL = re.compile(rb"^x-(?:mailgun|mailbeacon)-([a-z-]+)\s*:", re.I)
_HANDLED = {"tag", "track", "track-clicks", "track-opens", "variables", "drop-message",
            "deliver-by", "recipient-variables", "delivery"}


@dataclass(frozen=True)
class Controls:
    stripped: bytes  # the message without the control headers
    tags: list[str] = field(default_factory=list)
    variables: dict[str, Any] = field(default_factory=dict)
    options: TrackingOptions = TrackingOptions()
    delivery: DeliveryOptions = DeliveryOptions()


@dataclass(frozen=True)
class Overrides:
    """The API's fields for a message whose own control headers may say otherwise; each
    one given wins (`v:` variables are merged over the headers' ones)."""

    tags: list[str] = field(default_factory=list)  # if any: instead of the headers' tags
    variables: dict[str, Any] = field(default_factory=dict)
    options: TrackingOptions = TrackingOptions()  # each one not None wins
    testmode: bool | None = None
    deliver_at: int | None = None
    recipient_variables: dict[str, dict[str, Any]] | None = None

    def over(self, controls: Controls) -> Controls:
        """`controls` (read from headers) with these fields over them."""
        delivery = controls.delivery
        return Controls(
            stripped=controls.stripped,
            tags=self.tags or controls.tags,
            variables={**controls.variables, **self.variables},
            options=self.options.over(controls.options),
            delivery=DeliveryOptions(
                testmode=delivery.testmode if self.testmode is None else self.testmode,
                deliver_at=delivery.deliver_at if self.deliver_at is None else self.deliver_at,
                recipient_variables=delivery.recipient_variables
                if self.recipient_variables is None else self.recipient_variables),
        )

    def delivery(self) -> DeliveryOptions:
        """The delivery options these fields give alone (a message without headers)."""
        return self.over(Controls(b"")).delivery


def parse_variable(value: str) -> Any:
    """v: values stay strings, except JSON objects and arrays, which events show parsed."""
    if value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            pass
    return value


def parse_delivery_time(value: str) -> int:
    """o:deliverytime (RFC 2822 date) in microseconds; BadRequest if unusable."""
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError) as exc:
        raise BadRequest("'o:deliverytime' must be an RFC 2822 date, e.g. "
                         "'Fri, 14 Oct 2026 23:10:10 -0000'") from exc
    if when.tzinfo is None:  # "-0000": RFC 2822's "zone unknown", UTC by convention
        when = when.replace(tzinfo=datetime.UTC)
    seconds = when.timestamp()
    if seconds > time.time() + MAX_SCHEDULE_SECONDS:
        raise BadRequest("'o:deliverytime' may be at most 7 days ahead")
    return int(seconds * 1_000_000)


def controls_from_headers(raw: bytes) -> Controls:
    """Read and strip the control headers of a raw message."""
    head, rest = _split(raw)
    kept: list[bytes] = []
    found: dict[str, list[str]] = {}
    for field_bytes in _fields(head):
        match = _CONTROL.match(field_bytes)
        if match and match.group(1).decode().lower() in _HANDLED:
            name = match.group(1).decode().lower()
            value = field_bytes[match.end():].decode("utf-8", "replace")
            found.setdefault(name, []).append(_decode(value))
        else:
            kept.append(field_bytes)
    return _interpret(b"".join(kept) + rest, found)


def _interpret(stripped: bytes, found: dict[str, list[str]]) -> Controls:
    def last(name: str) -> str | None:
        values = found.get(name)
        return values[-1] if values else None

    def flag(name: str) -> bool | None:
        value = last(name)
        return None if value is None else parse_bool(value, f"X-Mailgun-{name}")

    variables: dict[str, Any] = {}
    for text in found.get("variables", []):
        value = parse_variable(text)
        if not isinstance(value, dict):
            raise BadRequest("X-Mailgun-Variables must be a JSON object")
        variables.update(value)
    clicks = last("track-clicks")
    rvars_text = last("recipient-variables")
    rvars = None
    if rvars_text:
        rvars = parse_variable(rvars_text)
        if not isinstance(rvars, dict) or not all(isinstance(v, dict) for v in rvars.values()):
            raise BadRequest("X-Mailgun-Recipient-Variables must be a JSON object of objects")
        rvars = {str(k).lower(): v for k, v in rvars.items()}
    deliver_by = last("deliver-by") or last("delivery")
    tags = [t.strip() for value in found.get("tag", []) for t in value.split(",") if t.strip()]
    return Controls(
        stripped=stripped,
        tags=tags,
        variables=variables,
        options=TrackingOptions(
            tracking=flag("track"), opens=flag("track-opens"),
            clicks=parse_click_mode(clicks, "X-Mailgun-Track-Clicks") if clicks else None),
        delivery=DeliveryOptions(
            testmode=bool(flag("drop-message")),
            deliver_at=parse_delivery_time(deliver_by) if deliver_by else None,
            recipient_variables=rvars),
    )


def _split(raw: bytes) -> tuple[bytes, bytes]:
    """(header block, the rest from the blank line that ends it)."""
    match = re.search(rb"\n\r?\n", raw)
    if match is None:
        return raw, b""
    return raw[:match.start() + 1], raw[match.start() + 1:]


def _fields(head: bytes) -> list[bytes]:
    """Header fields with their folded continuation lines, line endings kept."""
    fields: list[bytes] = []
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def _decode(value: str) -> str:
    unfolded = re.sub(r"\r?\n[ \t]", " ", value).strip()
    try:
        return str(make_header(decode_header(unfolded)))
    except (ValueError, LookupError):
        return unfolded

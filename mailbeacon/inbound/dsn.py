"""Lenient reading of RFC 3464 delivery-status fields.

Real MTAs fold lines, drop the blank line between recipient blocks, put Action before
Final-Recipient, or paste the fields into a text/plain part. So this reads "Name: value"
lines from any text, unfolds continuations, and starts a new recipient block at a blank line
or when a per-recipient field repeats.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mailbeacon.events.codes import first_address, one_line
from mailbeacon.events.reasons import STATUS

_FIELD = re.compile(r"^[ \t]*([A-Za-z][A-Za-z0-9-]{1,40})[ \t]*:[ \t]*(.*)$")
_FIELD_ANYWHERE = re.compile(_FIELD.pattern, re.MULTILINE)
RECIPIENT_FIELDS = ("original-recipient", "final-recipient", "x-actual-recipient")
# Fields that belong to one recipient; seeing one again starts the next recipient's block.
PER_RECIPIENT = frozenset(
    {*RECIPIENT_FIELDS, "action", "status", "diagnostic-code", "remote-mta", "last-attempt-date"}
)
# Enough to call a text a delivery status report.
DSN_EVIDENCE = frozenset({"final-recipient", "original-recipient", "action", "status"})


@dataclass
class Block:
    """One recipient's delivery-status fields (lower-case names)."""

    fields: dict[str, str] = field(default_factory=dict)

    @property
    def recipient(self) -> str:
        """Original-Recipient (what we sent to) if usable, else Final-Recipient."""
        for name in RECIPIENT_FIELDS:
            value = self.fields.get(name, "")
            address = first_address(value)
            if address:
                return address
        for name in RECIPIENT_FIELDS:
            value = _strip_type(self.fields.get(name, ""))
            if value and " " not in value:
                return value.lower().strip("<>")
        return ""

    @property
    def action(self) -> str:
        return self.fields.get("action", "").strip().split(" ")[0].lower().strip(";,.")

    @property
    def status(self) -> str:
        m = STATUS.search(self.fields.get("status", ""))
        return m.group(1) if m else ""

    @property
    def diagnostic_type(self) -> str:
        value = self.fields.get("diagnostic-code", "")
        return value.split(";", 1)[0].strip().lower() if ";" in value else ""

    @property
    def diagnostic(self) -> str:
        return one_line(_strip_type(self.fields.get("diagnostic-code", "")))

    @property
    def remote_mta(self) -> str:
        return one_line(_strip_type(self.fields.get("remote-mta", "")), 255)


def _strip_type(value: str) -> str:
    """ "rfc822; a@b" -> "a@b", "smtp; 550 ..." -> "550 ..." (only a short leading type word)."""
    head, sep, tail = value.partition(";")
    if sep and re.fullmatch(r"\s*[A-Za-z0-9-]{1,20}\s*", head):
        return tail.strip()
    return value.strip()


@dataclass
class Report:
    """All delivery-status fields found: per-message fields and recipient blocks."""

    per_message: dict[str, str] = field(default_factory=dict)
    blocks: list[Block] = field(default_factory=list)

    @property
    def reporting_mta(self) -> str:
        return one_line(_strip_type(self.per_message.get("reporting-mta", "")), 255)


def read_fields(text: str, report: Report | None = None) -> Report:
    """Collect delivery-status fields from `text` (appending to `report` if given)."""
    report = report or Report()
    current: dict[str, str] = {}
    last = ""

    def close() -> None:
        if any(name in current for name in RECIPIENT_FIELDS):
            report.blocks.append(Block(dict(current)))
        else:
            for name, value in current.items():
                report.per_message.setdefault(name, value)
        current.clear()

    for line in text.splitlines():
        if not line.strip():
            close()
            last = ""
            continue
        if line[:1] in (" ", "\t") and last:
            current[last] = f"{current[last]} {line.strip()}"
            continue
        m = _FIELD.match(line)
        if m is None:
            last = ""
            continue
        name, value = m.group(1).lower(), m.group(2).strip()
        has_recipient = any(n in current for n in RECIPIENT_FIELDS)
        if name in PER_RECIPIENT and name in current and has_recipient:
            close()
        if name in current and name not in PER_RECIPIENT:
            last = ""
            continue
        current[name] = value
        last = name
    close()
    return report


def looks_like_dsn(text: str) -> bool:
    """True when `text` carries at least two delivery-status fields, one naming a recipient."""
    names = {m.group(1).lower() for m in _FIELD_ANYWHERE.finditer(text[:200_000])}
    names &= DSN_EVIDENCE
    return len(names) >= 2 and bool(names & {"final-recipient", "original-recipient"})

"""The event vocabulary and the event JSON we store and serve (Mailgun's shape, DESIGN 9).

Every event is built here, so the Events API, webhooks and the dashboard all see one shape.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any

from mailbeacon.events.failures import failure_counters


class EventType(enum.StrEnum):
    ACCEPTED = "accepted"  # taken in by the API or SMTP, queued for delivery
    DELIVERED = "delivered"  # the upstream relay answered 2xx
    FAILED = "failed"  # not delivered: see severity and reason
    OPENED = "opened"  # the open pixel was fetched (or a link was clicked first)
    CLICKED = "clicked"  # a tracked link was followed
    UNSUBSCRIBED = "unsubscribed"  # the recipient unsubscribed
    COMPLAINED = "complained"  # the recipient reported the message as spam
    REPLIED = "replied"  # a reply came back to a bounce domain (our extension)


class Severity(enum.StrEnum):
    TEMPORARY = "temporary"  # may succeed later (4xx, connection failure)
    PERMANENT = "permanent"  # will not succeed (5xx)


# Stats counters beyond one per event type; stats_buckets.event holds these names too.
UNIQUE_OPENED = "unique_opened"  # first open of a message x recipient
UNIQUE_CLICKED = "unique_clicked"  # first click of a message x recipient
# Counters of failed events: mailbeacon.events.failures.

_LOG_LEVEL = {
    EventType.ACCEPTED: "info",
    EventType.DELIVERED: "info",
    EventType.OPENED: "info",
    EventType.CLICKED: "info",
    EventType.UNSUBSCRIBED: "info",
    EventType.COMPLAINED: "warn",
    EventType.REPLIED: "info",
}


@dataclass(frozen=True)
class MessageInfo:
    """What every event of one message repeats about it."""

    domain: str
    message_id: str  # without <>
    sender: str
    headers: dict[str, str]  # from, to, subject, message-id
    tags: list[str]
    user_variables: dict[str, Any]

    @classmethod
    def from_row(cls, row: Any) -> MessageInfo:
        return cls(
            domain=row.domain,
            message_id=row.message_id,
            sender=row.sender,
            headers=json.loads(row.headers),
            tags=json.loads(row.tags),
            user_variables=json.loads(row.user_variables),
        )


@dataclass
class EventRecord:
    """One event about to be stored, with the stats counters it bumps."""

    event: EventType
    ts: int  # microseconds since the epoch
    message: MessageInfo
    recipient: str
    delivery_id: str | None
    data: dict[str, Any]
    severity: Severity | None = None
    # Extra stats counters: (name, added to count, added to human_count), e.g. unique.
    counters: list[tuple[str, int, int]] = field(default_factory=list)
    human: bool = True  # False for hits judged to be bots (track/bots.py)
    dimensions: dict[str, str] = field(default_factory=dict)  # country, device, os, client

    def row(self) -> dict[str, Any]:
        return {
            "domain": self.message.domain,
            "ts": self.ts,
            "event": str(self.event),
            "recipient": self.recipient.lower(),
            "message_id": self.message.message_id,
            "delivery_id": self.delivery_id,
            "severity": str(self.severity) if self.severity else None,
            "tags": "|" + "|".join(self.message.tags) + "|" if self.message.tags else "",
            "data": self.data,
        }

    def stats_counters(self) -> list[tuple[str, int, int]]:
        """(counter, count, human count) this event adds to the stats."""
        human = 1 if self.human else 0
        found = [(str(self.event), 1, human)]
        if self.severity is not None:
            found = [(name, 1, human) for name in failure_counters(
                self.severity is Severity.PERMANENT, self.data)]
        return [*found, *self.counters]


def build_event(
    event: EventType,
    ts: int,
    message: MessageInfo,
    recipient: str,
    delivery_id: str | None = None,
    severity: Severity | None = None,
    counters: list[tuple[str, int, int]] | None = None,
    human: bool = True,
    dimensions: dict[str, str] | None = None,
    **extra: Any,
) -> EventRecord:
    """An event in Mailgun's JSON; `extra` keys use Python names (delivery_status ->
    "delivery-status")."""
    level = "error" if severity is Severity.PERMANENT else (
        "warn" if severity is Severity.TEMPORARY else _LOG_LEVEL[event])
    data: dict[str, Any] = {
        "event": str(event),
        "timestamp": ts / 1_000_000,
        "log-level": level,
        "recipient": recipient,
        "recipient-domain": recipient.rpartition("@")[2].lower(),
        "tags": list(message.tags),
        "user-variables": dict(message.user_variables),
        "message": {"headers": dict(message.headers)},
    }
    if severity is not None:
        data["severity"] = str(severity)
    for key, value in extra.items():
        data[key.replace("_", "-")] = value
    return EventRecord(event, ts, message, recipient, delivery_id, data, severity,
                       counters or [], human, dimensions or {})

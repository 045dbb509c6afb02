"""Where a composed delivery leaves mailbeacon: the `Transport` interface.

The upstream relay (relay.py) and the local outbox (outbox.py, when no relay is
configured) both implement it. The delivery worker hands each one a `Parcel`, the one
recipient's composed message together with the delivery it carries, and gets an
`Outcome` back; a transport never raises for trouble on the way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Outcome:
    code: int  # SMTP reply code; 0 when no server answered
    message: str
    description: str = ""  # what went wrong, for failures with no SMTP reply

    @property
    def delivered(self) -> bool:
        return 200 <= self.code < 300

    @property
    def permanent(self) -> bool:
        return 500 <= self.code < 600


@dataclass(frozen=True)
class Parcel:
    """One delivery, composed for its recipient."""

    delivery_id: str
    sender: str  # the envelope sender (VERP: bounce+<token>@<bounce domain>)
    recipient: str
    data: bytes  # the message
    wire: bytes | None = None  # `data` as SMTP DATA sends it (relay.transparent), if made


class Transport(Protocol):
    """What the delivery worker sends through."""

    @property
    def host(self) -> str:
        """Where it sends to, as the event's `mx-host` shows it."""
        ...

    async def send(self, parcel: Parcel) -> Outcome:
        """Try one delivery; every problem is an Outcome, never an exception."""
        ...

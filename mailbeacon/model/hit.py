"""One tracking hit: the value the tracking doors make and the recorder stores.

Inbound mail makes hits too (a `mailto:` List-Unsubscribe), so the value and the
interface that records it live below both.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from mailbeacon.model.tokens import Kind

HONEYPOT_INDEX = 65535  # link index of the hidden link no person can see (send/compose.py)


class Hit(NamedTuple):  # a tuple: made on every tracking hit, several times cheaper
    kind: Kind  # OPEN, CLICK or UNSUBSCRIBE
    delivery_id: str
    ts: int  # microseconds
    ip: str
    user_agent: str
    method: str = "GET"
    url: str = ""
    link_index: int = 0
    scope: str = ""  # unsubscribes: "" the domain, "tag", "list" (see model/tokens.py)


class HitSink(Protocol):
    """Whatever stores hits (track/recorder.Recorder)."""

    async def record(self, hit: Hit) -> None: ...

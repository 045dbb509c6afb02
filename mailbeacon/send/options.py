"""How a message is to be tracked and delivered: parts of an `OutgoingMessage`, stored
with it and read again by the delivery worker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TrackingOptions:
    """Per-message overrides of the domain's tracking settings (None: use the domain's)."""

    tracking: bool | None = None
    opens: bool | None = None
    clicks: str | None = None  # yes | no | htmlonly
    pixel_top: bool | None = None

    def to_json(self) -> dict[str, Any]:
        return {"tracking": self.tracking, "opens": self.opens, "clicks": self.clicks,
                "pixel_top": self.pixel_top}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrackingOptions:
        return cls(data.get("tracking"), data.get("opens"), data.get("clicks"),
                   data.get("pixel_top"))

    def over(self, defaults: TrackingOptions) -> TrackingOptions:
        """These options, each one not set taken from `defaults`."""
        return TrackingOptions(*(
            mine if mine is not None else default
            for mine, default in zip(self.to_json().values(), defaults.to_json().values(),
                                     strict=True)))


@dataclass(frozen=True)
class DeliveryOptions:
    """How and when to deliver, whatever the path the message came in by."""

    testmode: bool = False  # record as delivered (650), relay nothing
    deliver_at: int | None = None  # microseconds; None: now
    # Batch sending: address (lowercase) -> variables for %recipient.NAME% substitution.
    recipient_variables: dict[str, dict[str, Any]] | None = None

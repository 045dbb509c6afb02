"""Failed events in stats: Mailgun's failure keys and failures by category (no I/O).

Each `failed` event adds stats counters (`stats_buckets.event`) named here:

- temporary: `failed_temporary`, `temp:<category>`, and `espblock` when the receiver
  refused or throttled *us* (category `policy-block`), which is what Mailgun's
  `failed.temporary.espblock` counts. A full mailbox is not an ESP block.
- permanent, dropped by a suppression (reason `suppress-bounce`, `suppress-unsubscribe`,
  `suppress-complaint`): `failed_permanent`, `suppressed` and `suppress_<kind>`.
- permanent, anything else: `failed_permanent`, `bounced`, `perm:<category>`, and
  `delayed_bounce` when the bounce came back after the relay had accepted the message
  (a returned report: `flags.is-delayed-bounce`). Mailgun's `bounce` is then
  bounced - delayed_bounce: refused in the SMTP dialogue, or given up after retrying.

Categories group the bounce-reason vocabulary (events/reasons.py) the way a sender acts
on them, like Infobip's error groups; `category_of` reads an event's `reason` when it is
one of those reasons, else the `bounce-reason` the worker gave the relay's answer, else
classifies its `delivery-status` with the same classifier.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from mailbeacon.events.reasons import POLICY_REASONS, STATUS, Reason, decide_reason


class FailureCategory(enum.StrEnum):
    """Why a message was not delivered, in the words a sender acts on."""

    NO_SUCH_USER = "no-such-user"  # the mailbox does not exist (or moved, or is disabled)
    MAILBOX_FULL = "mailbox-full"  # over quota
    POLICY_BLOCK = "policy-block"  # the receiver refused or throttled us: spam, policy
    DNS_ERROR = "dns-error"  # the domain does not exist or takes no mail
    TOO_LARGE = "too-large"  # the message is larger than the receiver takes
    OTHER = "other"  # anything else: system errors, timeouts, unknown


LABELS: dict[FailureCategory, str] = {
    FailureCategory.NO_SUCH_USER: "No such user",
    FailureCategory.MAILBOX_FULL: "Mailbox full",
    FailureCategory.POLICY_BLOCK: "Policy or spam block",
    FailureCategory.DNS_ERROR: "DNS or domain error",
    FailureCategory.TOO_LARGE: "Message too large",
    FailureCategory.OTHER: "Other",
}

CATEGORY_OF_REASON: dict[Reason, FailureCategory] = {
    Reason.USER_UNKNOWN: FailureCategory.NO_SUCH_USER,
    Reason.HAS_MOVED: FailureCategory.NO_SUCH_USER,
    Reason.SUSPEND: FailureCategory.NO_SUCH_USER,
    Reason.MAILBOX_FULL: FailureCategory.MAILBOX_FULL,
    Reason.HOST_UNKNOWN: FailureCategory.DNS_ERROR,
    Reason.NOT_ACCEPT: FailureCategory.DNS_ERROR,
    Reason.MESG_TOO_BIG: FailureCategory.TOO_LARGE,
    Reason.EXCEED_LIMIT: FailureCategory.TOO_LARGE,
    Reason.FILTERED: FailureCategory.POLICY_BLOCK,
    Reason.SPEEDING: FailureCategory.POLICY_BLOCK,
    Reason.TOO_MANY_CONN: FailureCategory.POLICY_BLOCK,
    **dict.fromkeys(POLICY_REASONS, FailureCategory.POLICY_BLOCK),
}

FAILED_TEMPORARY = "failed_temporary"
FAILED_PERMANENT = "failed_permanent"
BOUNCED = "bounced"  # a permanent failure that is a real bounce (not a suppression)
SUPPRESSED = "suppressed"  # a recipient dropped because of a suppression
DELAYED_BOUNCE = "delayed_bounce"  # a bounce returned after the relay accepted the message
ESPBLOCK = "espblock"  # a temporary failure because the receiver refused or throttled us
# Mailgun's suppress-* reasons -> their counters.
SUPPRESS_COUNTERS = {"suppress-bounce": "suppress_bounce",
                     "suppress-unsubscribe": "suppress_unsubscribe",
                     "suppress-complaint": "suppress_complaint"}


def category_counter(permanent: bool, category: FailureCategory) -> str:
    """The counter of failures of one severity and category, e.g. "perm:mailbox-full"."""
    return f"{'perm' if permanent else 'temp'}:{category}"


CATEGORY_COUNTERS = frozenset(category_counter(p, c) for p in (True, False)
                              for c in FailureCategory)
# Counters added with the category breakdown (migration 0009e backfills them).
NEW_FAILURE_COUNTERS = frozenset({DELAYED_BOUNCE, ESPBLOCK, *SUPPRESS_COUNTERS.values(),
                                  *CATEGORY_COUNTERS})


FailureRow = tuple[str, int, int, int, float]  # label, permanent, temporary, total, share


def failure_rows(found: Mapping[FailureCategory, tuple[int, int]]) -> list[FailureRow]:
    """Table rows of failures by category, every category in order, each with its share
    of all failures (0.0 when there are none): from {category: (permanent, temporary)}."""
    everything = sum(p + t for p, t in found.values())
    rows = []
    for category in FailureCategory:
        permanent, temporary = found.get(category, (0, 0))
        total = permanent + temporary
        rows.append((LABELS[category], permanent, temporary, total,
                     total / everything if everything else 0.0))
    return rows


def category_of(data: Mapping[str, Any]) -> FailureCategory:
    """The category of a failed event (its JSON): by its bounce reason when it has one
    (the event's own, or the worker's classification of the relay's answer), else by
    classifying its delivery status (enhanced code, SMTP code and text)."""
    status = data.get("delivery-status")
    status = status if isinstance(status, Mapping) else {}
    # The event's own reason, else the one the worker classified the relay's answer as.
    reason = _reason(data.get("reason")) or _reason(status.get("bounce-reason"))
    if reason is None:
        text = f"{status.get('message') or ''} {status.get('description') or ''}"
        enhanced = str(status.get("enhanced-code") or "")
        if not enhanced:
            found = STATUS.search(text)
            enhanced = found.group(1) if found else ""
        code = status.get("code")
        if not code and not enhanced:
            # No answer from a receiving server at all (the connection failed): whatever
            # the error text says, nobody refused anything.
            return FailureCategory.OTHER
        reason = decide_reason(enhanced, str(code) if code else "", text)
    return CATEGORY_OF_REASON.get(reason, FailureCategory.OTHER)


def _reason(value: Any) -> Reason | None:
    """A bounce reason that says something (not on-hold or undefined), or None."""
    try:
        reason = Reason(str(value or ""))
    except ValueError:
        return None
    return None if reason in (Reason.ON_HOLD, Reason.UNDEFINED) else reason


def failure_counters(permanent: bool, data: Mapping[str, Any], *,
                     new_only: bool = False) -> list[str]:
    """The stats counters one failed event adds (see the module docstring); with
    `new_only`, only those in NEW_FAILURE_COUNTERS."""
    reason = str(data.get("reason", ""))
    found: list[str]
    if not permanent:
        category = category_of(data)
        found = [FAILED_TEMPORARY, category_counter(False, category)]
        if category is FailureCategory.POLICY_BLOCK:
            found.append(ESPBLOCK)
    elif reason.startswith("suppress-"):
        found = [FAILED_PERMANENT, SUPPRESSED]
        if reason in SUPPRESS_COUNTERS:
            found.append(SUPPRESS_COUNTERS[reason])
    else:
        found = [FAILED_PERMANENT, BOUNCED, category_counter(True, category_of(data))]
        flags = data.get("flags")
        if isinstance(flags, Mapping) and flags.get("is-delayed-bounce") is True:
            found.append(DELAYED_BOUNCE)
    return [c for c in found if c in NEW_FAILURE_COUNTERS] if new_only else found

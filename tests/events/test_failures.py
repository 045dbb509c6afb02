"""mailbeacon.events.failures: which stats counters a failed event adds (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from mailbeacon.events.failures import FailureCategory, category_of, failure_counters


def status(code: int, message: str, **more: Any) -> dict[str, Any]:
    return {"code": code, "message": message, **more}


@pytest.mark.parametrize(("data", "category"), [
    # The relay's answers (send/worker.py: reason bounce/generic/old, codes in the text).
    ({"reason": "bounce", "delivery-status": status(550, "5.1.1 No such user")},
     FailureCategory.NO_SUCH_USER),
    ({"reason": "generic", "delivery-status": status(452, "4.2.2 Mailbox full")},
     FailureCategory.MAILBOX_FULL),
    ({"reason": "generic", "delivery-status": status(452, "Mailbox full")},
     FailureCategory.MAILBOX_FULL),
    ({"reason": "generic", "delivery-status": status(421, "4.7.0 Rate limited, try later")},
     FailureCategory.POLICY_BLOCK),
    ({"reason": "bounce", "delivery-status": status(550, "5.7.1 Message rejected as spam")},
     FailureCategory.POLICY_BLOCK),
    ({"reason": "bounce", "delivery-status": status(552, "5.3.4 Message too big")},
     FailureCategory.TOO_LARGE),
    ({"reason": "bounce", "delivery-status": status(550, "5.1.2 Host unknown")},
     FailureCategory.DNS_ERROR),
    # A give-up after retrying is judged by the last answer.
    ({"reason": "old", "delivery-status": status(452, "4.2.2 Over quota",
                                                 description="Gave up")},
     FailureCategory.MAILBOX_FULL),
    ({"reason": "generic", "delivery-status": status(0, "", description="connection "
                                                     "failed: Connection refused")},
     FailureCategory.OTHER),
    # Returned reports carry a bounce reason (events/reasons.py) and an enhanced code.
    ({"reason": "userunknown", "delivery-status": {"enhanced-code": "5.1.1"}},
     FailureCategory.NO_SUCH_USER),
    ({"reason": "hostunknown"}, FailureCategory.DNS_ERROR),
    ({"reason": "blocked"}, FailureCategory.POLICY_BLOCK),
    ({"reason": "exceedlimit"}, FailureCategory.TOO_LARGE),
    ({"reason": "onhold", "delivery-status": {"enhanced-code": "5.2.2"}},
     FailureCategory.MAILBOX_FULL),
    ({}, FailureCategory.OTHER),
    ({"delivery-status": "garbage"}, FailureCategory.OTHER),
])
def test_category_of(data: dict[str, Any], category: FailureCategory) -> None:
    assert category_of(data) is category


def test_counters_as_mailgun_names_them() -> None:
    full = {"reason": "generic", "delivery-status": status(452, "4.2.2 Mailbox full")}
    assert failure_counters(False, full) == ["failed_temporary", "temp:mailbox-full"]
    throttled = {"reason": "generic", "delivery-status": status(421, "4.7.0 Rate limited")}
    assert failure_counters(False, throttled) == ["failed_temporary", "temp:policy-block",
                                                  "espblock"]
    refused = {"reason": "bounce", "delivery-status": status(550, "5.1.1 No such user")}
    assert failure_counters(True, refused) == ["failed_permanent", "bounced",
                                               "perm:no-such-user"]
    returned = {"reason": "mailboxfull", "flags": {"is-delayed-bounce": True}}
    assert failure_counters(True, returned) == ["failed_permanent", "bounced",
                                                "perm:mailbox-full", "delayed_bounce"]
    for kind in ("bounce", "unsubscribe", "complaint"):
        dropped = {"reason": f"suppress-{kind}", "delivery-status": {"code": 605}}
        assert failure_counters(True, dropped) == ["failed_permanent", "suppressed",
                                                   f"suppress_{kind}"]
    assert failure_counters(True, returned, new_only=True) == ["perm:mailbox-full",
                                                               "delayed_bounce"]

"""The bounce-reason vocabulary and the classifier that maps SMTP evidence onto it.

Reasons are Sisimai's words, so results can be compared with its corpus. Each reason has a
`Category` saying what mailbeacon does about it:

- HARD: the address is wrong (unknown user or domain, moved): suppress it.
- SOFT: it may work later (mailbox full, timeouts, temporary errors): count it.
- POLICY: the receiver refused *us* (blocklists, spam filters, DMARC): record, never suppress.

`classify` decides by the enhanced status code first, then by the diagnostic text, then by
the SMTP reply code; all three are dict/tuple tables so a new code is one line. Pure: no I/O.

    >>> classify("5.1.1", "550", "User unknown")
    (<Reason.USER_UNKNOWN: 'userunknown'>, <Category.HARD: 'hard'>)
"""

from __future__ import annotations

import enum
import re

from mailbeacon.events.reason_patterns import DEFINITE_USER_UNKNOWN, TEXT_PATTERNS


class Reason(enum.StrEnum):
    """Why a message was not delivered (Sisimai's vocabulary)."""

    USER_UNKNOWN = "userunknown"  # the mailbox does not exist
    HOST_UNKNOWN = "hostunknown"  # the domain does not exist or has no mail server
    HAS_MOVED = "hasmoved"  # the recipient moved to another address
    NOT_ACCEPT = "notaccept"  # the domain accepts no mail at all (null MX)
    MAILBOX_FULL = "mailboxfull"  # over quota
    EXCEED_LIMIT = "exceedlimit"  # message larger than the recipient's per-message limit
    MESG_TOO_BIG = "mesgtoobig"  # message larger than the server's limit
    SUSPEND = "suspend"  # the mailbox exists but is disabled or suspended
    FILTERED = "filtered"  # refused by the recipient's own filter (or after DATA)
    BLOCKED = "blocked"  # our sending IP or host is blocked
    REJECTED = "rejected"  # our envelope sender was refused
    POLICY_VIOLATION = "policyviolation"  # refused by a local policy of the receiver
    SPAM_DETECTED = "spamdetected"  # the content was judged to be spam
    VIRUS_DETECTED = "virusdetected"  # the content carried malware
    SECURITY_ERROR = "securityerror"  # authentication or security requirement not met
    AUTH_FAILURE = "authfailure"  # SPF/DKIM/DMARC failed
    REQUIRE_PTR = "requireptr"  # our IP has no (matching) reverse DNS
    BAD_REPUTATION = "badreputation"  # our IP or domain has a poor reputation
    NOT_COMPLIANT_RFC = "notcompliantrfc"  # the message violates RFC 5322
    CONTENT_ERROR = "contenterror"  # malformed or unacceptable content
    NO_RELAYING = "norelaying"  # the server refused to relay
    FAILED_STARTTLS = "failedstarttls"  # TLS was required and failed
    SPEEDING = "speeding"  # rate limited
    TOO_MANY_CONN = "toomanyconn"  # too many connections or recipients
    EXPIRED = "expired"  # gave up after retrying for too long
    NETWORK_ERROR = "networkerror"  # connection, DNS or routing-loop trouble
    SYSTEM_ERROR = "systemerror"  # the receiving system failed
    SYSTEM_FULL = "systemfull"  # the receiving system is out of disk
    MAILER_ERROR = "mailererror"  # a local delivery program failed
    SYNTAX_ERROR = "syntaxerror"  # an SMTP command was not understood
    ON_HOLD = "onhold"  # a failure whose cause could not be decided
    UNDEFINED = "undefined"  # no evidence at all
    FEEDBACK = "feedback"  # a complaint (ARF), not a bounce
    VACATION = "vacation"  # an auto-reply, not a bounce
    DELIVERED = "delivered"  # a success DSN


class Category(enum.StrEnum):
    """What mailbeacon does with a bounce of this kind."""

    HARD = "hard"  # suppress the address now
    SOFT = "soft"  # count toward the soft-bounce limit
    POLICY = "policy"  # record only: the receiver refused us, not the address


# Reasons that say the address itself is bad. NOT_ACCEPT only counts when permanent.
HARD_REASONS = frozenset({Reason.USER_UNKNOWN, Reason.HOST_UNKNOWN, Reason.HAS_MOVED})

# Refusals aimed at the sender (IP, domain, content, authentication), never the address.
POLICY_REASONS = frozenset(
    {
        Reason.BLOCKED,
        Reason.REJECTED,
        Reason.POLICY_VIOLATION,
        Reason.SPAM_DETECTED,
        Reason.VIRUS_DETECTED,
        Reason.SECURITY_ERROR,
        Reason.AUTH_FAILURE,
        Reason.REQUIRE_PTR,
        Reason.BAD_REPUTATION,
        Reason.NOT_COMPLIANT_RFC,
        Reason.CONTENT_ERROR,
        Reason.NO_RELAYING,
        Reason.FAILED_STARTTLS,
    }
)

# Not failures: no category at all.
NON_BOUNCE_REASONS = frozenset({Reason.FEEDBACK, Reason.VACATION, Reason.DELIVERED})

# Enhanced status "subject.detail" (class dropped) -> (reason, definitive). A definitive code
# wins over the text; a generic one (X.0.0, X.7.1, ...) lets a matching text decide, because
# servers use those for many different refusals.
STATUS_REASONS: dict[str, tuple[Reason, bool]] = {
    "1.0": (Reason.USER_UNKNOWN, False),  # other address status (mostly: address rejected)
    "1.1": (Reason.USER_UNKNOWN, False),  # bad destination mailbox address
    "1.2": (Reason.HOST_UNKNOWN, True),  # bad destination system address
    "1.3": (Reason.USER_UNKNOWN, False),  # bad destination mailbox address syntax
    "1.4": (Reason.USER_UNKNOWN, False),  # destination mailbox address ambiguous
    "1.6": (Reason.HAS_MOVED, True),  # destination mailbox has moved
    "1.7": (Reason.REJECTED, True),  # bad sender's mailbox address syntax
    "1.8": (Reason.REJECTED, True),  # bad sender's system address
    "1.10": (Reason.USER_UNKNOWN, False),  # recipient address has null MX (often: not found)
    "1.351": (Reason.USER_UNKNOWN, False),  # Exchange Online: recipient not found
    "2.0": (Reason.FILTERED, False),  # other or undefined mailbox status
    "2.1": (Reason.SUSPEND, False),  # mailbox disabled, not accepting messages
    "2.2": (Reason.MAILBOX_FULL, True),  # mailbox full
    "2.3": (Reason.EXCEED_LIMIT, True),  # message length exceeds administrative limit
    "2.4": (Reason.SYSTEM_ERROR, False),  # mailing list expansion problem
    "3.0": (Reason.SYSTEM_ERROR, False),  # other or undefined mail system status
    "3.1": (Reason.SYSTEM_FULL, True),  # mail system full
    "3.2": (Reason.NOT_ACCEPT, False),  # system not accepting network messages
    "3.3": (Reason.SYSTEM_ERROR, False),  # system not capable of selected features
    "3.4": (Reason.MESG_TOO_BIG, True),  # message too big for system
    "3.5": (Reason.SYSTEM_ERROR, False),  # system incorrectly configured
    "4.0": (Reason.NETWORK_ERROR, False),  # other or undefined network or routing status
    "4.1": (Reason.EXPIRED, False),  # no answer from host
    "4.2": (Reason.EXPIRED, False),  # bad connection
    "4.3": (Reason.SYSTEM_ERROR, False),  # directory server failure
    "4.4": (Reason.HOST_UNKNOWN, False),  # unable to route
    "4.5": (Reason.SYSTEM_FULL, False),  # mail system congestion
    "4.6": (Reason.NETWORK_ERROR, True),  # routing loop detected
    "4.7": (Reason.EXPIRED, False),  # delivery time expired
    "4.14": (Reason.NETWORK_ERROR, False),  # Exchange Online: hop count exceeded
    "4.312": (Reason.NETWORK_ERROR, False),  # Exchange Online: DNS query failed
    "4.316": (Reason.EXPIRED, False),  # Exchange Online: message expired, connection refused
    "5.1": (Reason.SYNTAX_ERROR, False),  # invalid command
    "5.2": (Reason.SYNTAX_ERROR, False),  # syntax error
    "5.3": (Reason.TOO_MANY_CONN, False),  # too many recipients
    "5.4": (Reason.SYNTAX_ERROR, False),  # invalid command arguments
    "6.0": (Reason.CONTENT_ERROR, False),  # other or undefined media error
    "6.1": (Reason.CONTENT_ERROR, False),  # media not supported
    "6.9": (Reason.CONTENT_ERROR, False),  # (vendor) content rejected
    "7.0": (Reason.POLICY_VIOLATION, False),  # other or undefined security status
    "7.1": (Reason.BLOCKED, False),  # delivery not authorized, message refused
    "7.2": (Reason.POLICY_VIOLATION, False),  # mailing list expansion prohibited
    "7.3": (Reason.SECURITY_ERROR, False),  # security conversion required
    "7.4": (Reason.SECURITY_ERROR, False),  # security features not supported
    "7.5": (Reason.SECURITY_ERROR, False),  # cryptographic failure
    "7.6": (Reason.SECURITY_ERROR, False),  # cryptographic algorithm not supported
    "7.7": (Reason.SECURITY_ERROR, False),  # message integrity failure
    "7.8": (Reason.SECURITY_ERROR, False),  # authentication credentials invalid
    "7.9": (Reason.SECURITY_ERROR, False),  # authentication mechanism too weak
    "7.10": (Reason.FAILED_STARTTLS, False),  # encryption needed
    "7.11": (Reason.FAILED_STARTTLS, False),  # encryption required for requested mechanism
    "7.13": (Reason.SUSPEND, True),  # user account disabled
    "7.14": (Reason.NOT_ACCEPT, False),  # trust relationship required
    "7.15": (Reason.SECURITY_ERROR, False),  # priority level is too low
    "7.16": (Reason.MESG_TOO_BIG, False),  # message too big for specified priority
    "7.17": (Reason.SUSPEND, False),  # mailbox owner has changed
    "7.18": (Reason.SUSPEND, False),  # domain owner has changed
    "7.19": (Reason.SECURITY_ERROR, False),  # RRVS test cannot be completed
    "7.20": (Reason.AUTH_FAILURE, True),  # no passing DKIM signature found
    "7.21": (Reason.AUTH_FAILURE, True),  # no acceptable DKIM signature found
    "7.22": (Reason.AUTH_FAILURE, True),  # no valid author-matched DKIM signature found
    "7.23": (Reason.AUTH_FAILURE, True),  # SPF validation failed
    "7.24": (Reason.AUTH_FAILURE, True),  # SPF validation error
    "7.25": (Reason.REQUIRE_PTR, True),  # reverse DNS validation failed
    "7.26": (Reason.AUTH_FAILURE, True),  # multiple authentication checks failed
    "7.27": (Reason.NOT_ACCEPT, True),  # sender address has null MX
    "7.28": (Reason.SPAM_DETECTED, False),  # mail flood detected
    "7.29": (Reason.SECURITY_ERROR, False),  # ARC validation failure
    "7.30": (Reason.FAILED_STARTTLS, False),  # REQUIRETLS support required
    "7.54": (Reason.NO_RELAYING, True),  # Exchange Online: unable to relay
    "7.57": (Reason.SECURITY_ERROR, True),  # Exchange Online: client not authenticated
    "7.509": (Reason.AUTH_FAILURE, True),  # Exchange Online: sender domain fails DMARC
    "7.515": (Reason.AUTH_FAILURE, True),  # Exchange Online: sender fails authentication
    "7.606": (Reason.BLOCKED, True),  # Exchange Online: sending IP banned
    "7.650": (Reason.BAD_REPUTATION, True),  # Exchange Online: IP has poor reputation
}

# Generic codes whose reason the text may change only to one of these: a 5.1.1 that says
# "mailbox full" is full, but one that says "rejected" is still an unknown user.
TEXT_OVERRIDES: dict[str, frozenset[Reason]] = {
    "1.1": frozenset(
        {
            Reason.MAILBOX_FULL,
            Reason.HAS_MOVED,
            Reason.NO_RELAYING,
            Reason.BLOCKED,
            Reason.REJECTED,
            Reason.NOT_ACCEPT,
            Reason.FILTERED,
            Reason.MAILER_ERROR,
            Reason.SPAM_DETECTED,
            Reason.SPEEDING,
            Reason.TOO_MANY_CONN,
        }
    ),
}

# Basic SMTP reply codes (RFC 5321, 7504) -> reason, used only when nothing better is known.
REPLY_CODE_REASONS: dict[str, Reason] = {
    "421": Reason.SYSTEM_ERROR,  # service not available, closing channel
    "450": Reason.ON_HOLD,  # mailbox unavailable (busy)
    "451": Reason.SYSTEM_ERROR,  # local error in processing
    "452": Reason.MAILBOX_FULL,  # insufficient system storage
    "521": Reason.NOT_ACCEPT,  # host does not accept mail
    "551": Reason.HAS_MOVED,  # user not local, please try forward-path
    "552": Reason.MAILBOX_FULL,  # exceeded storage allocation
    "553": Reason.USER_UNKNOWN,  # mailbox name not allowed
    "556": Reason.NOT_ACCEPT,  # domain does not accept mail
}

# Canonical enhanced code per reason (see `canonical_status`). The parser does not fill in
# missing codes with it: the corpus convention (Sisimai) uses private X.0.9xx codes there,
# so an invented code would agree with nothing; callers that need a code may use it.
CANONICAL_STATUS: dict[Reason, str] = {
    Reason.USER_UNKNOWN: "1.1",
    Reason.HOST_UNKNOWN: "1.2",
    Reason.HAS_MOVED: "1.6",
    Reason.MAILBOX_FULL: "2.2",
    Reason.EXCEED_LIMIT: "2.3",
    Reason.MESG_TOO_BIG: "3.4",
    Reason.SYSTEM_FULL: "3.1",
    Reason.NOT_ACCEPT: "1.10",
    Reason.EXPIRED: "4.7",
    Reason.REQUIRE_PTR: "7.25",
    Reason.AUTH_FAILURE: "7.26",
}

# An enhanced status code (RFC 3463) inside free text.
STATUS = re.compile(r"(?<![\w.])([245]\.\d{1,3}\.\d{1,3})(?!\.?\d)")
_STATUS_RE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})$")


def status_detail(status: str) -> str:
    """The "subject.detail" part of an enhanced status code ("5.1.1" -> "1.1"), or ""."""
    m = _STATUS_RE.match(status.strip())
    return f"{int(m.group(2))}.{int(m.group(3))}" if m else ""


def permanent_by_codes(status: str, reply_code: str) -> bool:
    """True unless the codes say the failure is temporary (4xx) or not a failure (2xx)."""
    first = (status.strip() or reply_code.strip())[:1]
    return first not in ("4", "2")


def reason_from_text(text: str) -> Reason | None:
    """The first reason whose pattern matches the diagnostic text, or None."""
    if not text:
        return None
    for reason_word, pattern in TEXT_PATTERNS:
        if pattern.search(text):
            return Reason(reason_word)
    return None


def definitely_unknown(text: str) -> bool:
    """True when the text is a receiving system's own "no such mailbox" wording."""
    return bool(DEFINITE_USER_UNKNOWN.search(text))


def category_for(reason: Reason, permanent: bool) -> Category | None:
    """What to do about a bounce of this reason; None for non-bounces (complaint, success).

    Only a permanent failure is hard: a 4xx "user unknown" may be a directory hiccup.
    """
    if reason in NON_BOUNCE_REASONS:
        return None
    if permanent and (reason in HARD_REASONS or reason is Reason.NOT_ACCEPT):
        return Category.HARD
    if reason in POLICY_REASONS:
        return Category.POLICY
    return Category.SOFT


def decide_reason(status: str, reply_code: str, diagnostic: str) -> Reason:
    """The reason alone: definitive status code, else text, else generic status, else reply code."""
    if status.startswith("2."):
        return Reason.DELIVERED
    detail = status_detail(status)
    by_status = STATUS_REASONS.get(detail)
    if by_status is not None and by_status[1]:
        return by_status[0]
    by_text = reason_from_text(diagnostic)
    allowed = TEXT_OVERRIDES.get(detail)
    if by_text is not None and (allowed is None or by_text in allowed):
        return by_text
    if by_status is not None:
        return by_status[0]
    by_code = REPLY_CODE_REASONS.get(reply_code.strip())
    if by_code is not None:
        return by_code
    if reply_code.startswith("2"):
        return Reason.DELIVERED
    return Reason.ON_HOLD if (status or reply_code) else Reason.UNDEFINED


def classify(status: str, reply_code: str, diagnostic: str) -> tuple[Reason, Category]:
    """Map an enhanced status, an SMTP reply code and a diagnostic text to a reason and category.

    Non-bounce reasons (delivered) get the SOFT category here; the parser leaves `category`
    empty on those results.
    """
    reason = decide_reason(status, reply_code, diagnostic)
    category = category_for(reason, permanent_by_codes(status, reply_code)) or Category.SOFT
    return reason, category


def canonical_status(reason: Reason, permanent: bool) -> str:
    """The standard enhanced code for a reason ("" if it has none), e.g. for an event record.

    Mailbox full is 4.2.2 when temporary and 5.2.2 when permanent, and so on.
    """
    detail = CANONICAL_STATUS.get(reason)
    if detail is None:
        return ""
    return f"{'5' if permanent else '4'}.{detail}"

"""Finding SMTP evidence in free text: addresses, reply codes, enhanced status codes.

Bounce texts quote the remote server in many shapes ("550 5.1.1 <a@b>... User unknown",
"550-5.7.26 ...", "(#5.1.1)", "said: 550 ..."), next to IP addresses, dates and version
numbers that look alike; the patterns below are anchored so those do not match.
"""

from __future__ import annotations

import re

from mailbeacon.events.reasons import STATUS

ADDRESS = re.compile(r"(?<![\w.!#$%&'*+/=?^`{|}~-])[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")
# "5.1.1" but not the tail of an IP address ("192.0.2.153") or a version ("v4.1.2").
# "550" followed by a status, text or the end of a line; not inside numbers or dates.
REPLY_CODE = re.compile(
    r"(?<![\w.:/+\-])([245][0-5]\d)(?=[ \-]+(?:[245]\.\d|[^\d\s:.]|$)|[ \t]*$|\])", re.MULTILINE
)
CODE_AND_STATUS = re.compile(
    r"(?<![\w.:/+\-])([245][0-5]\d)[ \-]+[(#'\"]{0,2}([245]\.\d{1,3}\.\d{1,3})(?!\.?\d)"
)
_SPACE = re.compile(r"\s+")
_LEADING_STATUS = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}\s+")
MAX_DIAGNOSTIC = 1000


def one_line(text: str, limit: int = MAX_DIAGNOSTIC) -> str:
    """Whitespace collapsed to single spaces, trimmed, at most `limit` characters."""
    return _SPACE.sub(" ", text).strip()[:limit]


def addresses(text: str) -> list[str]:
    """Email addresses in order of appearance, lower-cased, without duplicates."""
    seen: dict[str, None] = {}
    for m in ADDRESS.finditer(text):
        seen.setdefault(m.group(0).strip(".").lower(), None)
    return list(seen)


def position(text: str, address: str, start: int = 0) -> int:
    """Offset of `address` as a whole address (not inside a longer one) in `text`, or -1."""
    if not address:
        return -1
    pattern = re.compile(r"(?<![\w.+-])" + re.escape(address) + r"(?!\.?[\w-])", re.IGNORECASE)
    m = pattern.search(text, start)
    return m.start() if m else -1


def first_address(text: str) -> str:
    """The first email address in `text`, lower-cased, or ""."""
    m = ADDRESS.search(text)
    return m.group(0).strip(".").lower() if m else ""


def find_codes(text: str) -> tuple[str, str, int]:
    """(reply code, enhanced status, offset of the evidence) in `text`; "" / -1 when absent.

    Failure codes (4xx/5xx) are preferred over 2xx greetings in a session transcript, and a
    code directly followed by a status ("550 5.1.1") over either one alone.
    """
    failure = next((m for m in CODE_AND_STATUS.finditer(text) if m.group(1)[0] in "45"), None)
    if failure is not None:
        return failure.group(1), failure.group(2), failure.start()
    pair = CODE_AND_STATUS.search(text)
    status_match = next((m for m in STATUS.finditer(text) if m.group(1)[0] in "45"), None)
    code_match = next((m for m in REPLY_CODE.finditer(text) if m.group(1)[0] in "45"), None)
    status = status_match.group(1) if status_match else ""
    code = code_match.group(1) if code_match else ""
    if status and code and status[0] != code[0]:
        # A 4xx transcript line next to a final 5.x.x status (or the reverse): keep the status
        # and the code that agrees with it, if any.
        agreeing = next((m for m in REPLY_CODE.finditer(text) if m.group(1)[0] == status[0]), None)
        code = agreeing.group(1) if agreeing else ""
    offsets = [m.start() for m in (status_match, code_match) if m is not None]
    if not offsets and pair is not None:
        # Only a success ("250 2.1.5 Ok"): a delivery report, not a failure.
        return pair.group(1), pair.group(2), pair.start()
    return code, status, min(offsets) if offsets else -1


def response_at(text: str, offset: int) -> str:
    """The SMTP response starting on the line at `offset`, with its continuation lines."""
    start = text.rfind("\n", 0, offset) + 1
    lines = text[start:].splitlines()[:12]
    if not lines:
        return ""
    taken = [lines[0]]
    code = REPLY_CODE.search(lines[0])
    prefix = code.group(1) if code else ""
    for line in lines[1:]:
        stripped = line.strip()
        if not stripped:
            break
        if prefix and stripped[:3] == prefix and stripped[3:4] in ("-", " "):
            taken.append(_LEADING_STATUS.sub("", stripped[4:]))
        elif line[:1] in (" ", "\t") and not ADDRESS.fullmatch(stripped.strip("<>")):
            taken.append(stripped)
        else:
            break
    return one_line(" ".join(taken))


# SMTP commands as bounce texts mention them ("after RCPT TO:<...>", "in reply to end of
# DATA command", ">>> DATA"). Upper case only for words that are also English ("data").
_COMMAND = re.compile(
    r"(?i:\b(rcpt)\b)|\b(MAIL FROM|MAIL From)\b|(?i:\b(mail from):)|\b(DATA)\b|"
    r"(?i:\b(end of data|final data|data command)\b)|\b(HELO|EHLO|STARTTLS|AUTH|CONNECT)\b"
)
_COMMAND_NAMES = ("RCPT", "MAIL", "MAIL", "DATA", "DATA", "CONN")


def smtp_command(text: str) -> str:
    """The last SMTP command `text` says a reply came in answer to: RCPT, MAIL, DATA, CONN."""
    last = ""
    for m in _COMMAND.finditer(text):
        if m.lastindex:
            last = _COMMAND_NAMES[m.lastindex - 1]
    return last

"""The rules for header fields that leave mailbeacon (pure, no I/O).

Values are judged after decoding: an RFC 2047 encoded word (`=?utf-8?q?a=0D=0Ab?=`),
an RFC 2231 parameter or a display name can carry a line break that the email package
before Python 3.11.10 writes out as a real one (CVE-2024-6923). And `str.splitlines`,
which the email package folds with, breaks lines at \\x0b, \\x0c, \\x1c-\\x1e, \\x85,
\\u2028 and \\u2029 too. So every control character is refused in header values, and the
composed message is checked once more before it is relayed (`VerifyingPolicy`,
`verify_generated`).

- `check_value(field, name, value)`: BadRequest naming the field for a value with control
  characters, given directly or once decoded.
- `refuse_owned(field, name)`: BadRequest for headers that mailbeacon writes or that
  carry trust or MIME structure (`OWNED`, `ARC-*`).
- `safe_filename(name)`: an attachment file name without path or control characters.
- `VerifyingPolicy`: an email policy that fails generation when a folded header would
  start a new line (what Python 3.11.10's `verify_generated_headers` does).
- `verify_generated(data, expected)`: the header names of a generated message, parsed
  back, are exactly the intended ones.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.policy import EmailPolicy, Policy, default
from typing import Any

from mailbeacon.errors import BadRequest, MailbeaconError

# C0 and C1 controls except TAB (legal folding white space), DEL, and the Unicode line
# and paragraph separators: each is a line break to str.splitlines or simply invalid.
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
# Bidirectional overrides make "invoice\u202efdp.exe" look like "invoiceexe.pdf".
_BIDI = re.compile(r"[\u202a-\u202e\u2066-\u2069\u200e\u200f]")
# Headers a sender cannot set with h:, because mailbeacon writes them (List-Unsubscribe,
# Return-Path), they describe the MIME structure mailbeacon builds, or receivers trust
# them (signatures, authentication results, trace fields).
OWNED = frozenset({
    "content-type", "content-transfer-encoding", "mime-version", "dkim-signature",
    "received", "return-path", "authentication-results", "list-unsubscribe",
    "list-unsubscribe-post",
})
# Trust headers dropped from submitted MIME (messages.mime, SMTP): a signature the
# sender made breaks when mailbeacon rewrites the message, and only the receiving side
# may say what it verified. Trace fields (Received) are kept, as every relay keeps them.
UNTRUSTED_IN_MIME = frozenset({"dkim-signature", "authentication-results", "return-path"})
# Deepest MIME nesting taken at intake: real mail nests 3 to 5 levels; the email package
# recurses per level and fails near 250.
MAX_MIME_DEPTH = 50
_NEWLINE_WITHOUT_FWSP = re.compile(r"\r\n[^ \t]|\r[^ \n\t]|\n[^ \t]")


class HeaderInjection(MailbeaconError, ValueError):
    """A generated message does not have the header fields it was meant to have."""


def is_owned(name: str) -> bool:
    lowered = name.lower()
    return lowered in OWNED or lowered.startswith("arc-")


def refuse_owned(field: str, name: str) -> None:
    if is_owned(name):
        raise BadRequest(f"{field} cannot be set: mailbeacon writes the {name} header "
                         "itself (or it carries trust or MIME structure)")


def check_text(field: str, value: str, where: str = "") -> None:
    """BadRequest naming the field (and `where`, e.g. a recipient) for a control char."""
    found = CONTROL.search(value)
    if found:
        raise BadRequest(f"{field} must not contain control characters or line breaks"
                         f"{where} (found {found.group()!r})")


def check_value(field: str, name: str, value: str, where: str = "") -> None:
    """Refuse `value` for header `name` if it, or what it decodes to, holds a control
    character (BadRequest naming `field`, and `where`: e.g. " for bob@example.org")."""
    check_text(field, value, where)
    try:
        for decoded in decoded_parts(name, value):
            check_text(field, decoded, f"{where} once decoded")
    except BadRequest:
        raise
    except Exception as exc:  # noqa: BLE001 - the email package raises all sorts here
        # e.g. "address parts cannot contain CR or LF" after decoding a display name, or
        # an IndexError for a decoded display name that reads as a group
        raise BadRequest(f"{field} is not a valid {name} header{where} once decoded "
                         f"({type(exc).__name__}: {exc})") from exc


def check_written(field: str, name: str, header: Any, policy: Policy) -> None:
    """`check_value` on a header as `policy` writes it (what a receiver reads): the email
    package re-encodes display names, and some read back differently, or not at all."""
    folded = policy.fold_binary(name, header).decode("utf-8", "surrogateescape")
    check_value(field, name, re.sub(r"\r?\n(?=[ \t])", "", folded.partition(":")[2]).strip())


def decoded_parts(name: str, value: str) -> Iterator[str]:
    """What the email package makes of a header value, as generation will decode it: the
    text, the display names and addresses of address headers, the MIME parameters; and
    every encoded word decoded wherever it stands (the structured parser folds some
    controls into white space, and a receiver may decode them where it does not)."""
    if "=?" in value:
        with contextlib.suppress(ValueError, HeaderParseError, LookupError):
            yield str(make_header(decode_header(value)))
    header = default.header_factory(name, value)
    yield str(header)
    for address in getattr(header, "addresses", ()):
        yield from (address.display_name, address.username, address.domain)
    params = getattr(header, "params", None)
    if params:
        yield from (str(v) for v in params.values())


def safe_filename(name: str, fallback: str = "attachment") -> str:
    """The last path component, encoded words decoded, without control or
    bidi-override characters.

    >>> safe_filename("../../etc/=?utf-8?q?pass=0D=0Awd?=")
    'passwd'
    """
    if "=?" in name:
        with contextlib.suppress(ValueError, HeaderParseError, LookupError, IndexError):
            name = str(default.header_factory("X-Filename", name))
    name = CONTROL.sub("", _BIDI.sub("", name))
    name = re.split(r"[/\\]", name)[-1].strip().lstrip(".").strip()
    return name[:255] or fallback


class VerifyingPolicy(EmailPolicy):
    """Fails generation (HeaderInjection) when a folded header holds a line break that
    does not continue it, as Python 3.11.10's `verify_generated_headers` does: e.g. a
    decoded encoded word, or a \\x0c that `splitlines` turned into a line break."""

    def fold(self, name: str, value: str) -> str:
        return _verified(name, super().fold(name, value), self.linesep)

    def fold_binary(self, name: str, value: str) -> bytes:
        folded = super().fold_binary(name, value)
        _verified(name, folded.decode("ascii", "surrogateescape"), self.linesep)
        return folded


def _verified(name: str, folded: str, linesep: str) -> str:
    if not folded.endswith(linesep) or _NEWLINE_WITHOUT_FWSP.search(
            folded.removesuffix(linesep)):
        raise HeaderInjection(f"the {name} header would not be written as one header field")
    return folded


def header_names(data: bytes) -> list[str]:
    """The names of the top-level header fields of a generated message, in order."""
    end = data.find(b"\r\n\r\n")
    head = data if end < 0 else data[:end + 2]
    names = []
    for line in head.split(b"\r\n"):
        if not line or line[:1] in (b" ", b"\t"):
            continue
        name, colon, _ = line.partition(b":")
        if not colon:
            raise HeaderInjection(f"a header line has no field name: {line[:40]!r}")
        names.append(name.decode("ascii", "surrogateescape").strip().lower())
    return names


def verify_generated(data: bytes, expected: Sequence[str]) -> None:
    """HeaderInjection unless the message's header names, parsed back, are `expected`
    (in order, case-insensitively)."""
    found = header_names(data)
    wanted = [name.lower() for name in expected]
    if found != wanted:
        extra = sorted(set(found) - set(wanted)) or sorted(set(wanted) - set(found))
        raise HeaderInjection("the composed message does not have the intended header "
                              f"fields (differs in: {', '.join(extra) or 'their order'})")


def mime_depth(msg: Any, limit: int = MAX_MIME_DEPTH) -> int:
    """How deep `msg` nests (1: not multipart), counted without recursion up to `limit`+1."""
    deepest = 0
    stack = [(msg, 1)]
    while stack:
        part, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        if part.is_multipart():
            payload = part.get_payload()
            if isinstance(payload, list):
                stack.extend((child, depth + 1) for child in payload)
    return deepest

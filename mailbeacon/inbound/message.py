"""Reading a raw report into the pieces the parsers look at, leniently and within caps.

Reports are often broken (truncated MIME, wrong or unknown charsets, 8-bit headers), so every
step here degrades to "nothing found" instead of raising. Caps keep memory and time bounded
on huge (or hostile) messages: only the first `MAX_INPUT_BYTES` of a message are looked at,
and before the email package parses anything, `trim_parts` keeps the headers of every part
and only the first `MAX_PART_BYTES` of each part's body, `MAX_PARSED_BYTES` in all.
Everything a report needs (notification text, delivery-status fields, the returned
original's headers) comes at the start of its part in practice, and a 5 MB message then
costs what a 100 KB one does.
"""

from __future__ import annotations

import contextlib
import html
import re
from dataclasses import dataclass, field
from email import message_from_bytes
from email.errors import MessageError
from email.header import Header, decode_header, make_header
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32

MAX_INPUT_BYTES = 4 * 1024 * 1024  # bytes of the raw message that are looked at at all
MAX_PART_BYTES = 64 * 1024  # raw body bytes kept per MIME part (headers are kept whole)
MAX_PART_HEADER_BYTES = 64 * 1024  # raw header bytes kept per MIME part
MAX_PARSED_BYTES = 1024 * 1024  # what `trim_parts` hands to the email package, at most
MAX_TEXT_BYTES = 1024 * 1024  # decoded bytes kept per text part
MAX_PARTS = 200  # MIME parts visited; a report has a handful
MAX_HEADER_BLOCK = 64 * 1024  # characters of an inline original parsed as headers
MAX_REPARSE = 3  # multiparts with a lost boundary parsed again

STATUS_TYPES = frozenset(
    {"message/delivery-status", "message/global-delivery-status", "text/delivery-status"}
)
FEEDBACK_TYPES = frozenset({"message/feedback-report", "text/feedback-report"})
MESSAGE_TYPES = frozenset({"message/rfc822", "message/global", "message/partial"})
HEADERS_TYPES = frozenset(
    {
        "text/rfc822-headers",
        "text/rfc822-header",
        "message/rfc822-headers",
        "message/global-headers",
        "text/global-headers",
    }
)

# message/* types the library parses into sub-messages, which we read as one leaf instead.
_LEAF_TYPES = STATUS_TYPES | FEEDBACK_TYPES | MESSAGE_TYPES | HEADERS_TYPES
# Lines that introduce the copy of the returned message inside a plain-text bounce.
_ORIGINAL_MARKER = re.compile(
    r"^[ \t>]*(?:[-=_*#]{2,}[ \t]*)?(?:"
    r"this is a copy of (?:the|your) message"
    r"|below this line is a copy of the message"
    r"|original message (?:follows|header|headers|is attached)"
    r"|(?<=[-=_*#] )original message\b"
    r"|(?<=[-=_*#])original message\b"
    r"|message headers follow"
    r"|returned message"
    r"|unsent message below"
    r"|(?:start|begin) of (?:the )?(?:returned|original|forwarded) message"
    r"|the header of the original message"
    r"|header of (?:the )?(?:original|returned) message"
    r"|original message header"
    r"|copy of (?:the )?(?:original )?message"
    r"|undelivered message (?:headers|follows)"
    r"|your message reads"
    r"|message text follows"
    r")",
    re.IGNORECASE | re.MULTILINE,
)
_HEADER_LINE = re.compile(r"^([A-Za-z][A-Za-z0-9-]{0,60}):[ \t]?(.*)$")
# Header names that only a copied message (not a notification) starts with.
_ORIGINAL_FIRST = frozenset(
    {
        "received",
        "return-path",
        "message-id",
        "dkim-signature",
        "x-received",
        "delivered-to",
        "authentication-results",
        "arc-seal",
        "x-original-to",
        "mime-version",
        "x-google-smtp-source",
        "domainkey-signature",
        "x-originating-ip",
        "x-mailer",
    }
)
_TAG = re.compile(r"<[^<>]{0,2000}>")  # [^<>]: linear on a run of "<"
_BLOCK_TAG = re.compile(r"<\s*(?:br|/p|p|/div|div|/tr|tr|li|/h\d)\b[^<>]{0,2000}>", re.IGNORECASE)
_INVISIBLE_TAGS = ("script", "style", "head")


@dataclass
class Mail:
    """The parts of a report that the parsers use."""

    headers: dict[str, str] = field(default_factory=dict)  # top level: name -> first value
    all_headers: list[tuple[str, str]] = field(default_factory=list)  # top level, in order
    content_type: str = "text/plain"
    report_type: str = ""
    texts: list[str] = field(default_factory=list)  # notification texts, original cut off
    status_texts: list[str] = field(default_factory=list)  # message/delivery-status bodies
    feedback_texts: list[str] = field(default_factory=list)  # message/feedback-report bodies
    original: dict[str, str] = field(default_factory=dict)  # returned message: name -> value
    message: Message | None = None  # the parsed message itself, for flufl.bounce
    embedded: bytes = b""  # the returned message, raw, in case it is itself a forwarded report
    reparsed: int = 0  # multiparts whose lost boundary was guessed (bounded: each costs a parse)

    @property
    def text(self) -> str:
        """All notification texts joined."""
        return "\n\n".join(self.texts)


def header_text(value: object) -> str:
    """A header value as one decoded line; never raises on encoded words or 8-bit bytes."""
    if value is None:
        return ""
    raw = str(value) if not isinstance(value, Header) else _header_str(value)
    # 8-bit header bytes arrive as surrogate escapes: read them as UTF-8 where possible.
    raw = raw.encode("utf-8", "surrogateescape" if _only_escapes(raw) else "replace").decode(
        "utf-8", "replace")
    if "=?" in raw:
        # Broken encoded words (bad base64, unknown charset) stay as they are.
        with contextlib.suppress(LookupError, UnicodeError, ValueError, TypeError, MessageError):
            raw = str(make_header(decode_header(raw)))
    return " ".join(raw.split())


def _only_escapes(text: str) -> bool:
    """True unless `text` holds surrogates other than the escapes of undecodable bytes."""
    return all(not 0xD800 <= ord(c) <= 0xDFFF or 0xDC80 <= ord(c) <= 0xDCFF for c in text)


def _header_str(value: Header) -> str:
    try:
        return str(value)
    except Exception:  # a charset the codec registry rejects: fall back to the raw form
        try:
            return value.encode()
        except Exception:  # nothing readable left
            return ""


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Bytes to text: the declared charset, else UTF-8, else the charset leniently, else latin-1."""
    data = data[:MAX_TEXT_BYTES]
    for candidate in (charset, "utf-8"):
        if not candidate:
            continue
        try:
            return data.decode(candidate)
        except (LookupError, UnicodeError, ValueError, TypeError):
            continue
    if charset:
        try:
            return data.decode(charset, "replace")
        except (LookupError, UnicodeError, ValueError, TypeError):
            pass
    return data.decode("latin-1")


def html_to_text(markup: str) -> str:
    """Visible text of an HTML part, good enough to find addresses and SMTP replies."""
    markup = _drop_invisible(markup)
    markup = _BLOCK_TAG.sub("\n", markup)
    return html.unescape(_TAG.sub(" ", markup))


def _drop_invisible(markup: str) -> str:
    """Remove <script>, <style> and <head> elements in linear time (no regex backtracking)."""
    lowered = markup.lower()
    kept: list[str] = []
    at = 0
    upcoming = {tag: lowered.find(f"<{tag}") for tag in _INVISIBLE_TAGS}
    while True:
        for tag, index in upcoming.items():
            if 0 <= index < at:  # only search again for tags we skipped past
                upcoming[tag] = lowered.find(f"<{tag}", at)
        found = [(index, tag) for tag, index in upcoming.items() if index >= 0]
        if not found:
            kept.append(markup[at:])
            return "".join(kept)
        index, tag = min(found)
        kept.append(markup[at:index])
        end = lowered.find(f"</{tag}", index)
        if end < 0:
            return "".join(kept)
        close = lowered.find(">", end)
        at = close + 1 if close >= 0 else len(markup)


def headers_dict(items: list[tuple[str, str]]) -> dict[str, str]:
    """Lower-cased name -> first decoded value."""
    out: dict[str, str] = {}
    for name, value in items:
        out.setdefault(name.lower().strip(), header_text(value))
    return out


def _items(msg: Message) -> list[tuple[str, str]]:
    try:
        return [(str(k), v) for k, v in msg.items()]
    except Exception:  # a header the library cannot even list: treat as absent
        return []


def parse_header_block(text: str) -> dict[str, str]:
    """Headers at the start of `text` (a copied message or a text/rfc822-headers part)."""
    try:
        parsed = HeaderParser(policy=compat32).parsestr(text[:MAX_HEADER_BLOCK].lstrip())
    except Exception:  # the parser is lenient, but a report must never fail on this
        return {}
    return headers_dict(_items(parsed))


def find_original_start(text: str) -> int:
    """Offset where a copy of the returned message starts inside a notification text, or -1.

    Either after a marker line ("--- Below this line is a copy of the message.") or at a run
    of header lines that a notification would not contain (Received:, Message-ID:, ...).
    """
    marker = _ORIGINAL_MARKER.search(text)
    if marker is not None:
        return marker.start()
    offset = 0
    lines = text.splitlines(keepends=True)
    for index, line in enumerate(lines):
        m = _HEADER_LINE.match(line.rstrip("\r\n"))
        if m and m.group(1).lower() in _ORIGINAL_FIRST and _headerish(lines[index : index + 4]):
            return offset
        offset += len(line)
    return -1


def _headerish(lines: list[str]) -> bool:
    """True when at least three of these lines are header or continuation lines."""
    count = 0
    for line in lines:
        if _HEADER_LINE.match(line.rstrip("\r\n")) or (line[:1] in (" ", "\t") and line.strip()):
            count += 1
        else:
            break
    return count >= 3


def _split_original(text: str) -> tuple[str, str]:
    """(notification, copied original) of a text part."""
    start = find_original_start(text)
    if start < 0:
        return text, ""
    rest = text[start:]
    if _ORIGINAL_MARKER.match(rest):
        rest = rest.split("\n", 1)[1] if "\n" in rest else ""
    return text[:start], rest


def _payload_text(part: Message) -> str:
    """Decoded text of a leaf part, with "\n" line ends whatever the message used."""
    return _unix_lines(_decoded_text(part))


def _unix_lines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def _decoded_text(part: Message) -> str:
    try:
        data = part.get_payload(decode=True)
    except Exception:  # broken transfer encoding
        data = None
    if isinstance(data, bytes):
        try:
            charset = part.get_content_charset()
        except Exception:  # malformed parameter
            charset = None
        return decode_bytes(data, charset)
    payload = part.get_payload()
    if isinstance(payload, str):
        return payload[:MAX_TEXT_BYTES]
    return _serialise_blocks(payload)


def _serialise_blocks(payload: object) -> str:
    """Text of a part the library split into header blocks (message/delivery-status)."""
    if not isinstance(payload, list):
        return ""
    blocks: list[str] = []
    for block in payload:
        if not isinstance(block, Message):
            continue
        lines = [f"{name}: {header_text(value)}" for name, value in _items(block)]
        body = block.get_payload()
        if isinstance(body, str) and body.strip():
            lines.append(body)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _status_text(part: Message) -> str:
    """Body of a delivery-status or feedback part, whether parsed into blocks or not."""
    text = _payload_text(part)
    encoding = str(part.get("content-transfer-encoding", "")).strip().lower()
    if encoding in ("base64", "quoted-printable") and isinstance(part.get_payload(), list):
        # The library splits such parts into header blocks before decoding; undo that.
        scratch = Message()
        scratch["Content-Transfer-Encoding"] = encoding
        scratch.set_payload(text)
        decoded = scratch.get_payload(decode=True)
        if isinstance(decoded, bytes):
            text = _unix_lines(decode_bytes(decoded, None))
    return text


_DELIMITER = re.compile(r"^--(\S{1,70})[ \t]*$", re.MULTILINE)


def _reparse_multipart(part: Message) -> Message | None:
    payload = part.get_payload()
    if not isinstance(payload, str):
        return None
    delimiter = _DELIMITER.search(payload[:MAX_HEADER_BLOCK])
    if delimiter is None:
        return None
    boundary = delimiter.group(1)
    head = f'Content-Type: multipart/mixed; boundary="{boundary}"\n\n'
    rebuilt = message_from_bytes(
        (head + payload).encode("utf-8", "surrogateescape"), policy=compat32
    )
    return rebuilt if rebuilt.is_multipart() else None


def _attached_bytes(part: Message) -> bytes:
    payload = part.get_payload()
    try:
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            return payload[0].as_bytes()[:MAX_INPUT_BYTES]
        if isinstance(payload, str):
            return payload.encode("utf-8", "surrogateescape")[:MAX_INPUT_BYTES]
    except Exception:  # an attachment the library cannot serialise again: ignore it
        pass
    return b""


def _attached_original(part: Message) -> dict[str, str]:
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return headers_dict(_items(payload[0]))
    if isinstance(payload, str):
        return parse_header_block(payload)
    return {}


_CONTENT_TYPE = re.compile(rb"^content-type[ \t]*:[ \t]*([^;\s]+)", re.IGNORECASE | re.MULTILINE)
_BOUNDARY = re.compile(rb"""\bboundary[ \t]*=[ \t]*(?:"([^"\r\n]{1,200})"|([^;\s"]{1,200}))""",
                       re.IGNORECASE)
_FOLD = re.compile(rb"\r?\n[ \t]+")
_MESSAGE_PART = (b"message/rfc822", b"message/global")
_LONG_LINE = 1000  # lines up to this long are kept whole (a cut base64 line would not decode)


def _structure(header_block: bytes) -> tuple[bytes, bytes]:
    """(content type, multipart boundary) of one part's raw header block."""
    unfolded = _FOLD.sub(b" ", header_block)
    found = _CONTENT_TYPE.search(unfolded)
    ctype = found.group(1).lower() if found else b""
    if not ctype.startswith(b"multipart/") or found is None:
        return ctype, b""
    line_end = unfolded.find(b"\n", found.start())
    boundary = _BOUNDARY.search(unfolded, found.start(),
                                len(unfolded) if line_end < 0 else line_end)
    return ctype, (boundary.group(1) or boundary.group(2)).strip() if boundary else b""


def trim_parts(raw: bytes, part_limit: int = MAX_PART_BYTES,
               total_limit: int = MAX_PARSED_BYTES) -> bytes:
    """`raw` with every MIME part's body cut to its first `part_limit` bytes (whole lines),
    the structure kept: all boundary lines, the headers of every part and of attached
    messages, up to `MAX_PARTS` parts. One linear pass over the bytes, no parsing; at most
    `total_limit` out.

    A base64 part cut at a line end still decodes; a cut text part reads as shorter.
    """
    out: list[bytes] = []
    size = 0
    delimiters: list[bytes] = []  # b"--boundary" of the open multiparts, outermost first
    header: list[bytes] = []  # the raw header block being read
    in_headers, header_size, body_size, parts = True, 0, 0, 0
    for line in raw.splitlines(keepends=True):
        if size >= total_limit:
            break
        if in_headers:
            if not line.strip() or header_size < MAX_PART_HEADER_BYTES:
                if len(line) > MAX_PART_HEADER_BYTES - header_size and line.strip():
                    line = line[:MAX_PART_HEADER_BYTES - header_size] + b"\n"
                out.append(line)
                size += len(line)
                header.append(line)
            header_size += len(line)
            if line.strip():
                continue
            ctype, boundary = _structure(b"".join(header))
            header, header_size, body_size = [], 0, 0
            if boundary:
                delimiters.append(b"--" + boundary)
            # An attached message starts with headers of its own.
            in_headers = ctype in _MESSAGE_PART
            continue
        if line.startswith(b"--") and delimiters:
            bare = line.rstrip()
            index = next((i for i in range(len(delimiters) - 1, -1, -1)
                          if bare in (delimiters[i], delimiters[i] + b"--")), -1)
            if index >= 0:
                parts += 1
                if parts > MAX_PARTS:
                    break  # a report has a handful; the parser would visit no more
                out.append(line)
                size += len(line)
                closing = bare == delimiters[index] + b"--"
                del delimiters[index + (0 if closing else 1):]
                in_headers, body_size = not closing, 0
                continue
        if body_size < part_limit:
            kept = line
            if len(line) > max(part_limit - body_size, _LONG_LINE):
                # One huge line (HTML or a JSON blob on one line): its start only.
                kept = line[:max(part_limit - body_size, _LONG_LINE)] + b"\n"
            out.append(kept)
            size += len(kept)
        body_size += len(line)
    return b"".join(out)


def read_mail(raw: bytes) -> Mail:
    """Parse a raw message into a `Mail`; never raises."""
    msg = message_from_bytes(trim_parts(raw[:MAX_INPUT_BYTES]), policy=compat32)
    mail = Mail(message=msg)
    mail.all_headers = [(name.lower(), header_text(value)) for name, value in _items(msg)]
    mail.headers = headers_dict(_items(msg))
    mail.content_type = msg.get_content_type()
    mail.report_type = str(msg.get_param("report-type", "") or "").lower().strip()
    html_texts: list[str] = []
    stack: list[Message] = [msg]
    visited = 0
    while stack and visited < MAX_PARTS:
        part = stack.pop()
        visited += 1
        _visit(part, mail, stack, html_texts)
    if not any(t.strip() for t in mail.texts):
        mail.texts.extend(html_texts)
    return mail


def _visit(part: Message, mail: Mail, stack: list[Message], html_texts: list[str]) -> None:
    """Sort one MIME part into the `Mail`; pushes children of multiparts onto `stack`."""
    content_type = part.get_content_type()
    if content_type.startswith("multipart/") and not part.is_multipart():
        # The boundary parameter was lost (often a folded header missing its indent): guess
        # it from the first delimiter line and parse the body again.
        rebuilt = _reparse_multipart(part) if mail.reparsed < MAX_REPARSE else None
        if rebuilt is not None:
            mail.reparsed += 1
            stack.append(rebuilt)
            return
        content_type = "text/plain"
    if part.is_multipart() and content_type not in _LEAF_TYPES:
        children = part.get_payload()
        if isinstance(children, list):
            stack.extend(reversed([c for c in children if isinstance(c, Message)]))
        return
    if content_type in STATUS_TYPES:
        mail.status_texts.append(_status_text(part))
    elif content_type in FEEDBACK_TYPES:
        mail.feedback_texts.append(_status_text(part))
    elif content_type in MESSAGE_TYPES:
        if not mail.original:
            mail.original = _attached_original(part)
        if not mail.embedded:
            mail.embedded = _attached_bytes(part)
    elif content_type in HEADERS_TYPES:
        if not mail.original:
            mail.original = parse_header_block(_payload_text(part))
    elif content_type.startswith("text/") or content_type == "application/json":
        text = _payload_text(part)
        if content_type == "text/html":
            text = html_to_text(text)
        notification, copied = _split_original(text)
        if copied and not mail.original:
            mail.original = parse_header_block(copied)
        if copied and not mail.embedded:
            mail.embedded = copied.lstrip().encode("utf-8", "replace")
        if content_type == "text/html":
            html_texts.append(notification)
        elif notification.strip() or not mail.texts:
            mail.texts.append(notification)

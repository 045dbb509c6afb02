"""The bounce mailbox: bounces and complaints fetched from a POP3 or IMAP mailbox.

Some setups cannot route a bounce domain to our SMTP server, so DSNs and complaints
land in an ordinary mailbox instead. `poll_once` takes what is waiting there, hands each
message to a handler, and removes (POP3) or flags (IMAP) only those the handler
processed; every other message stays where it is, to be offered again next poll.

It is blocking (poplib, imaplib): run it in a thread. The password never appears in a
repr, a log line or an error message; `MailboxConfig.redacted()` is what gets shown.
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import inspect
import logging
import poplib
import re
import socket
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any, BinaryIO
from urllib.parse import quote, unquote, urlsplit

from mailbeacon.errors import ConfigError, MailbeaconError
from mailbeacon.inbound.pollguard import PollGuard, PollLimits

__all__ = ["DONE_KEYWORD", "MailboxConfig", "MailboxError", "PollLimits", "PollResult",
           "poll_once"]

log = logging.getLogger("mailbeacon.mailbox")

# The IMAP keyword set on processed messages; searched with NOT KEYWORD.
DONE_KEYWORD = "$MailbeaconDone"

# scheme -> (protocol, TLS from the start, default port)
_SCHEMES: dict[str, tuple[str, bool, int]] = {
    "pop3": ("pop3", False, 110),
    "pop3s": ("pop3", True, 995),
    "imap": ("imap", False, 143),
    "imaps": ("imap", True, 993),
}

# poplib refuses lines over 2048 bytes and its stream is then out of step, so a single
# bounce quoting a long unwrapped HTML line would block the mailbox for good.
_POP3_MAX_LINE = 1_000_000

Handler = Callable[[bytes], bool]


class MailboxError(MailbeaconError, OSError):
    """The bounce mailbox could not be reached, logged into or read.

    The message names the mailbox (`MailboxConfig.redacted()`) and the problem,
    never the password.
    """


@dataclass(frozen=True)
class MailboxConfig:
    """Where the bounce mailbox is and how to log in; built by `from_url`.

    >>> MailboxConfig.from_url("imaps://bounces:s3cret@mail.example.com/Bounces").redacted()
    'imaps://bounces@mail.example.com:993/Bounces'
    """

    protocol: str  # "pop3" or "imap"
    tls: bool  # TLS from the start; else STARTTLS (STLS) when offered, else plain
    host: str
    port: int
    username: str
    password: str = field(repr=False)
    folder: str = "INBOX"  # IMAP only

    def __post_init__(self) -> None:
        if self.protocol not in ("pop3", "imap"):
            raise ConfigError(
                f"bounce mailbox protocol must be pop3 or imap, not {self.protocol!r}"
            )

    @classmethod
    def from_url(cls, url: str) -> MailboxConfig:
        """Parse pop3[s]://USER:PASS@HOST[:PORT] or imap[s]://USER:PASS@HOST[:PORT][/FOLDER].

        USER, PASS and FOLDER are percent-decoded. Error messages never quote the URL
        or parts of it that could be the password.
        """
        parts = urlsplit(url.strip())
        if parts.scheme not in _SCHEMES:
            raise ConfigError(
                "bounce mailbox URL must start with pop3://, pop3s://, imap:// or imaps://"
                f" (got {parts.scheme + '://' if parts.scheme else 'no scheme'})"
            )
        protocol, tls, default_port = _SCHEMES[parts.scheme]
        hint = "percent-encode @ : / ? # % in the user name and password"
        try:
            port = parts.port
        except ValueError:
            # ValueError quotes the "port", which is part of the password when it
            # holds an unencoded / ? or #.
            raise ConfigError(f"bounce mailbox URL has a bad port ({hint})") from None
        if port == 0:
            raise ConfigError("bounce mailbox URL has a bad port (0)")
        if not parts.hostname:
            raise ConfigError(f"bounce mailbox URL has no host ({hint})")
        if not parts.username or not parts.password:
            raise ConfigError(
                f"bounce mailbox URL needs USER:PASSWORD@ before the host ({hint})"
            )
        if parts.query or parts.fragment:
            raise ConfigError(f"bounce mailbox URL cannot have a ? or # part ({hint})")
        folder = unquote(parts.path).strip("/")
        if folder and protocol == "pop3":
            raise ConfigError("a POP3 bounce mailbox has no folders: remove the /path")
        return cls(protocol, tls, parts.hostname, port or default_port,
                   unquote(parts.username), unquote(parts.password), folder or "INBOX")

    def redacted(self) -> str:
        """The mailbox as a URL without the password, for logs and error messages."""
        scheme = self.protocol + ("s" if self.tls else "")
        host = f"[{self.host}]" if ":" in self.host else self.host
        folder = ""
        if self.protocol == "imap" and self.folder != "INBOX":
            folder = "/" + quote(self.folder)
        return f"{scheme}://{quote(self.username, safe='')}@{host}:{self.port}{folder}"


@dataclass(frozen=True)
class PollResult:
    """What one poll did; fetched == processed + failed."""

    fetched: int  # messages handed to the handler (or that could not be read)
    processed: int  # handler returned True and the message was deleted / flagged
    failed: int  # left in the mailbox for the next poll
    oversized: int = 0  # larger than PollLimits.message_bytes: left on the server
    deferred: int = 0  # not taken this poll (its byte budget or time was spent)


def poll_once(config: MailboxConfig, handle: Handler, *, timeout: float = 30.0,
              ssl_context: ssl.SSLContext | None = None,
              max_messages: int = 500, limits: PollLimits | None = None,
              stop: threading.Event | None = None) -> PollResult:
    """Hand up to `max_messages` waiting messages to `handle`; remove the processed ones.

    `handle(raw)` gets one message as raw RFC 5322 bytes with CRLF line endings. It
    returns True once the message needs no more attention (a bounce recorded, or mail
    it chose to ignore): POP3 deletes it, IMAP flags it `$MailbeaconDone \\Seen` and
    keeps it for inspection. False or an exception leaves it untouched, offered again
    next poll, so return False only when a retry can help.

    The handler must be idempotent: a message can come again after it was handled,
    since POP3 deletes only at QUIT (a connection lost before that deletes nothing)
    and an IMAP flag can fail to be stored.

    `limits` bound what a poll reads and how long it runs: a message over
    `message_bytes` stays on the server (counted in `oversized`, logged); once
    `poll_bytes` or `seconds` are spent, the rest waits for the next poll (`deferred`).
    Setting `stop` (at shutdown) cuts the session within a quarter of a second.

    Raises MailboxError when the server cannot be reached, refuses TLS or the login,
    answers nonsense, sends more than the limits allow, or the session breaks or runs
    out of time; never another exception. Blocking:
    `await asyncio.to_thread(poll_once, config, handle)`.
    """
    if max_messages < 1:
        raise ValueError("max_messages must be at least 1")
    context = ssl_context if ssl_context is not None else ssl.create_default_context()
    poll = _poll_pop3 if config.protocol == "pop3" else _poll_imap
    guard = PollGuard(limits or PollLimits(), timeout, stop)
    try:
        return poll(config, handle, timeout, context, max_messages, guard)
    except MailboxError:
        raise
    except Exception as exc:  # a server's nonsense must not escape as anything else
        raise MailboxError(f"{config.redacted()}: {_why(guard, exc, config)}") from exc
    finally:
        guard.close()


# --- shared ----------------------------------------------------------------------------


def _offer(config: MailboxConfig, handle: Handler, raw: bytes, where: str) -> bool:
    """Hand one message to the handler; True only when it says it processed it."""
    try:
        verdict: object = handle(raw)
    except Exception:
        log.exception("%s: handler failed on message %s (%s); kept for the next poll",
                      config.redacted(), where, _message_id(raw))
        return False
    if verdict is True:
        return True
    if not isinstance(verdict, bool):
        if inspect.iscoroutine(verdict):
            verdict.close()  # else it warns "never awaited" at some later, confusing moment
        log.error("%s: handler returned %s, not a bool (wrap an async handler); message %s "
                  "(%s) kept", config.redacted(), type(verdict).__name__, where,
                  _message_id(raw))
        return False
    log.warning("%s: handler did not process message %s (%s); kept for the next poll",
                config.redacted(), where, _message_id(raw))
    return False


def _message_id(raw: bytes) -> str:
    """The Message-ID, to tell operators which mail a log line is about."""
    try:
        value = BytesHeaderParser(policy=compat32).parsebytes(raw).get("Message-ID")
    except Exception:  # a log detail must never break the poll
        value = None
    # Folded or hostile headers: one line, bounded.
    return f"Message-ID {' '.join(str(value).split())[:200]}" if value else "no Message-ID"


def _is_refusal(exc: poplib.error_proto) -> bool:
    """A -ERR reply (bytes), after which the POP3 session is still usable.

    poplib's own errors (EOF, line too long) are str and leave the stream out of step.
    """
    return bool(exc.args) and isinstance(exc.args[0], bytes)


def _why(guard: PollGuard, exc: BaseException, config: MailboxConfig) -> str:
    """What went wrong in a poll, for its MailboxError: the cut, a malformed answer, or
    the library's error (scrubbed)."""
    if guard.cut:
        return f"the poll was cut off after {guard.limits.seconds:g} s, or stopped"
    if isinstance(exc, (ValueError, LookupError)):
        return f"malformed answer ({type(exc).__name__}: {_scrub(str(exc), config)[:200]})"
    return _reason(exc, config)


def _reason(exc: BaseException, config: MailboxConfig) -> str:
    """Readable text of a library error, with the password cut out should a server echo it."""
    arg = exc.args[0] if len(exc.args) == 1 else None
    text = arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(exc)
    return _scrub(text or type(exc).__name__, config)[:300]  # a server's line may be huge


def _reply(data: Sequence[object], config: MailboxConfig) -> str:
    """Readable text of an IMAP reply's data, scrubbed like `_reason`."""
    text = " ".join(item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
                    for item in data if item is not None)
    return _scrub(text or "no reason given", config)


def _scrub(text: str, config: MailboxConfig) -> str:
    secret = config.password
    # Raw, as imaplib quotes it, and as it was written in the URL.
    forms = {secret, secret.replace("\\", "\\\\").replace('"', '\\"'), quote(secret, safe="")}
    for form in sorted(forms, key=len, reverse=True):
        if form:
            text = text.replace(form, "***")
    return text


_warned_plain: set[str] = set()


def _warn_plain(config: MailboxConfig, starttls: str) -> None:
    """Warn, once per mailbox, that the password goes over the wire unencrypted."""
    where = config.redacted()
    if where not in _warned_plain:
        _warned_plain.add(where)
        log.warning("%s: server offers no %s; logging in without TLS (use %ss:// to require "
                    "TLS)", where, starttls, config.protocol)


# --- POP3 ------------------------------------------------------------------------------


class _LongLines:
    """poplib's line reader without its 2048-byte limit (see _POP3_MAX_LINE), counting
    every byte against the poll's guard."""

    file: BinaryIO
    guard: PollGuard
    # poplib's own, absent from its type stubs (annotations only: no attribute is made)
    host: str
    sock: socket.socket
    _tls_established: bool
    _shortcmd: Callable[[str], bytes]
    _longcmd: Callable[[str], tuple[bytes, list[bytes], int]]

    def _getline(self) -> tuple[bytes, int]:
        line: bytes = self.file.readline(_POP3_MAX_LINE + 1)
        self.guard.line(len(line))
        if len(line) > _POP3_MAX_LINE:
            raise poplib.error_proto("line too long")
        if not line:
            raise poplib.error_proto("-ERR EOF")
        if line.endswith(b"\r\n"):
            return line[:-2], len(line)
        return line.removesuffix(b"\n"), len(line)


class _Pop3(_LongLines, poplib.POP3):
    def __init__(self, guard: PollGuard, *args: Any, **kwargs: Any) -> None:
        self.guard = guard
        guard.client = self
        super().__init__(*args, **kwargs)


class _Pop3SSL(_LongLines, poplib.POP3_SSL):
    def __init__(self, guard: PollGuard, *args: Any, **kwargs: Any) -> None:
        self.guard = guard
        guard.client = self
        super().__init__(*args, **kwargs)


_Pop3Conn = _Pop3 | _Pop3SSL


def _pop3_close(conn: _Pop3Conn) -> None:
    # After a failed STLS handshake the socket is already detached: EBADF.
    with contextlib.suppress(OSError):
        conn.close()


def _pop3_offers_stls(conn: _Pop3Conn) -> bool:
    """CAPA, read as bytes: poplib's own decodes it as ASCII and fails on anything else."""
    try:
        _resp, lines, _octets = conn._longcmd("CAPA")
    except poplib.error_proto as exc:
        if not _is_refusal(exc):
            raise
        return False  # no CAPA command: an old server, without STLS
    return any(line.split()[:1] == [b"STLS"] for line in lines)


def _pop3_stls(conn: _Pop3Conn, context: ssl.SSLContext) -> None:
    """poplib's stls() without its second CAPA."""
    conn._shortcmd("STLS")
    conn.sock = context.wrap_socket(conn.sock, server_hostname=conn.host)
    conn.file = conn.sock.makefile("rb")
    conn._tls_established = True


def _pop3_login(config: MailboxConfig, timeout: float, context: ssl.SSLContext,
                guard: PollGuard) -> _Pop3Conn:
    where = config.redacted()
    conn: _Pop3Conn
    try:
        if config.tls:
            conn = _Pop3SSL(guard, config.host, config.port, timeout=timeout, context=context)
        else:
            conn = _Pop3(guard, config.host, config.port, timeout=timeout)
    except (OSError, poplib.error_proto) as exc:
        raise MailboxError(f"{where}: cannot connect: {_why(guard, exc, config)}") from exc
    step = "STLS"
    try:
        if not config.tls:
            if _pop3_offers_stls(conn):
                _pop3_stls(conn, context)
            else:
                _warn_plain(config, "STLS")
        step = "login"
        conn.user(config.username)
        conn.pass_(config.password)
    except poplib.error_proto as exc:
        _pop3_close(conn)
        # from None: the server's reply is in the message already, scrubbed.
        if not _is_refusal(exc):
            raise MailboxError(f"{where}: {step} failed: {_why(guard, exc, config)}") \
                from None
        raise MailboxError(f"{where}: {step} refused: {_reason(exc, config)}") from None
    except Exception as exc:
        _pop3_close(conn)
        raise MailboxError(f"{where}: {step} failed: {_why(guard, exc, config)}") from exc
    return conn


_POP3_COUNTS = re.compile(rb"\+OK (\d{1,12}) (\d{1,15})(?: .*)?")


def _pop3_numbers(conn: _Pop3Conn, command: str) -> tuple[int, int]:
    """The two numbers of a STAT or LIST n answer; malformed ones break the session."""
    resp = conn._shortcmd(command)
    found = _POP3_COUNTS.fullmatch(resp)
    if found is None:
        raise poplib.error_proto(f"malformed {command.split()[0]} answer: {resp[:100]!r}")
    return int(found[1]), int(found[2])


def _pop3_retr(conn: _Pop3Conn, number: int, guard: PollGuard) -> tuple[bytes | None, int]:
    """RETR, read line by line, and its size: None (the rest read and dropped) when the
    message turns out larger than the limit, whatever LIST said."""
    conn._shortcmd(f"RETR {number}")
    lines: list[bytes] = []
    size = 0
    guard.in_message = True
    try:
        while True:
            line, _octets = conn._getline()
            if line == b".":
                break
            if line.startswith(b".."):
                line = line[1:]
            size += len(line) + 2
            if size <= guard.limits.message_bytes:
                lines.append(line)
            else:
                lines.clear()
    finally:
        guard.in_message = False
    if size > guard.limits.message_bytes:
        return None, size
    return b"".join(line + b"\r\n" for line in lines), size


def _too_big(config: MailboxConfig, where: str, size: int, limits: PollLimits) -> None:
    log.warning("%s: message %s has %d bytes, over the %d-byte limit: left on the server "
                "(fetch it by hand)", config.redacted(), where, size, limits.message_bytes)


def _deferred(config: MailboxConfig, guard: PollGuard, left: int) -> None:
    spent = "time" if guard.late else f"{guard.limits.poll_bytes}-byte budget"
    log.warning("%s: the poll's %s is spent: %d message(s) wait for the next poll",
                config.redacted(), spent, left)


def _poll_pop3(config: MailboxConfig, handle: Handler, timeout: float,
               context: ssl.SSLContext, max_messages: int, guard: PollGuard) -> PollResult:
    """USER/PASS, RETR each, DELE the processed, QUIT (which is when deletions happen)."""
    conn = _pop3_login(config, timeout, context, guard)
    processed = failed = oversized = deferred = 0
    limits = guard.limits
    try:
        count, _size = _pop3_numbers(conn, "STAT")
        numbers = range(1, min(count, max_messages) + 1)
        for number in numbers:
            try:
                _number, size = _pop3_numbers(conn, f"LIST {number}")
            except poplib.error_proto as exc:
                if not _is_refusal(exc):
                    raise
                size = 0  # gone meanwhile: RETR says so
            if size > limits.message_bytes:
                _too_big(config, f"#{number}", size, limits)
                oversized += 1
                continue
            if guard.late or guard.messages + size > limits.poll_bytes:
                deferred = numbers.stop - number
                _deferred(config, guard, deferred)
                break
            try:
                raw, size = _pop3_retr(conn, number, guard)
            except poplib.error_proto as exc:
                if not _is_refusal(exc):
                    raise
                log.warning("%s: cannot retrieve message #%d: %s", config.redacted(), number,
                            _reason(exc, config))
                failed += 1
                continue
            if raw is None:
                _too_big(config, f"#{number}", size, limits)
                oversized += 1
                continue
            if not _offer(config, handle, raw, f"#{number}"):
                failed += 1
                continue
            try:
                conn.dele(number)
            except poplib.error_proto as exc:
                if not _is_refusal(exc):
                    raise
                log.warning("%s: cannot delete message #%d: %s", config.redacted(), number,
                            _reason(exc, config))
                failed += 1
                continue
            processed += 1
        conn.quit()
    except Exception as exc:
        _pop3_close(conn)
        raise MailboxError(
            f"{config.redacted()}: POP3 session broke ({_why(guard, exc, config)}); "
            "nothing was deleted, handled messages will be offered again"
        ) from exc
    except BaseException:  # e.g. KeyboardInterrupt in the handler: no QUIT, so no deletions
        _pop3_close(conn)
        raise
    return PollResult(processed + failed, processed, failed, oversized, deferred)


# --- IMAP ------------------------------------------------------------------------------


def _imap_quote(text: str) -> str:
    """An IMAP quoted string, so names with spaces or quotes go over intact."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _imap_utf7(name: str) -> str:
    """A folder name in IMAP's modified UTF-7 (RFC 3501 5.1.3), as servers expect it."""
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            encoded = base64.b64encode("".join(run).encode("utf-16-be")).decode("ascii")
            out.append("&" + encoded.rstrip("=").replace("/", ",") + "-")
            run.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            run.append(char)
    flush()
    return "".join(out)


class _CountedImap(imaplib.IMAP4):
    """Every line and literal counted against the poll's guard: endless untagged lines
    or a huge literal end the session instead of filling memory."""

    guard: PollGuard

    def __init__(self, guard: PollGuard, *args: Any, **kwargs: Any) -> None:
        self.guard = guard
        guard.client = self
        super().__init__(*args, **kwargs)

    def readline(self) -> bytes:
        line = super().readline()
        self.guard.line(len(line))
        return line

    def read(self, size: int) -> bytes:
        self.guard.literal(size)  # before reading: a 300 MB literal is never read
        return super().read(size)


class _CountedImapSSL(_CountedImap, imaplib.IMAP4_SSL):
    pass


def _imap_close(conn: imaplib.IMAP4) -> None:
    with contextlib.suppress(OSError):
        conn.shutdown()


def _imap_login(config: MailboxConfig, timeout: float, context: ssl.SSLContext,
                guard: PollGuard) -> imaplib.IMAP4:
    where = config.redacted()
    conn: imaplib.IMAP4
    try:
        if config.tls:
            conn = _CountedImapSSL(guard, config.host, config.port, ssl_context=context,
                                   timeout=timeout)
        else:
            conn = _CountedImap(guard, config.host, config.port, timeout=timeout)
    except Exception as exc:
        raise MailboxError(f"{where}: cannot connect: {_why(guard, exc, config)}") from exc
    step = "STARTTLS"
    try:
        if not config.tls:
            if "STARTTLS" in conn.capabilities:
                conn.starttls(context)
            else:
                _warn_plain(config, "STARTTLS")
        step = "login"
        _imap_authenticate(conn, config.username, config.password)
    except imaplib.IMAP4.abort as exc:
        _imap_close(conn)
        raise MailboxError(f"{where}: {step} failed: {_why(guard, exc, config)}") from None
    except imaplib.IMAP4.error as exc:
        _imap_close(conn)
        raise MailboxError(f"{where}: {step} refused: {_reason(exc, config)}") from None
    except Exception as exc:
        _imap_close(conn)
        raise MailboxError(f"{where}: {step} failed: {_why(guard, exc, config)}") from exc
    return conn


def _imap_authenticate(conn: imaplib.IMAP4, user: str, password: str) -> None:
    if conn.state == "AUTH":  # PREAUTH greeting: already logged in
        return
    if user.isascii() and password.isascii():
        # imaplib quotes the password but sends the user name raw.
        conn.login(_imap_quote(user), password)
    elif "AUTH=PLAIN" in conn.capabilities:
        # LOGIN takes only ASCII; AUTHENTICATE PLAIN carries UTF-8.
        conn.authenticate("PLAIN", lambda _: f"\0{user}\0{password}".encode())
    else:
        raise imaplib.IMAP4.error("a non-ASCII user name or password needs AUTH=PLAIN, "
                                  "which the server does not offer")


def _uids(data: Sequence[object]) -> list[str]:
    """UIDs of SEARCH responses, oldest first; anything that is not a UID is skipped."""
    found = b" ".join(item for item in data if isinstance(item, bytes)).split()
    uids = {int(uid) for uid in found if uid.isdigit() and len(uid) <= 10}
    if len(uids) < len(set(found)):
        log.warning("SEARCH answer held %d words that are not UIDs: skipped",
                    len(set(found)) - len(uids))
    return [str(uid) for uid in sorted(uids)]


def _imap_size(conn: imaplib.IMAP4, uid: str) -> int | None:
    """RFC822.SIZE of a message, None when the server does not say."""
    typ, data = conn.uid("FETCH", uid, "(RFC822.SIZE)")
    for item in data if typ == "OK" else []:
        text = item[0] if isinstance(item, tuple) else item
        if isinstance(text, bytes):
            found = re.search(rb"RFC822\.SIZE (\d{1,15})", text, re.IGNORECASE)
            if found:
                return int(found[1])
    return None


def _imap_pending(conn: imaplib.IMAP4, config: MailboxConfig) -> list[str]:
    """UIDs of messages not yet flagged as done."""
    try:
        typ, data = conn.uid("SEARCH", "NOT", "KEYWORD", DONE_KEYWORD)
    except imaplib.IMAP4.abort:
        raise
    except imaplib.IMAP4.error:  # BAD: criterion not understood
        typ, data = "BAD", []
    if typ == "OK":
        return _uids(data)
    # Keyword search refused: take every message and skip the flagged ones ourselves.
    log.debug("%s: keyword search refused; filtering on FLAGS", config.redacted())
    typ, data = conn.uid("SEARCH", "ALL")
    if typ != "OK":
        raise imaplib.IMAP4.error(f"SEARCH refused: {_reply(data, config)}")
    pending = _uids(data)
    if not pending:
        return []
    typ, data = conn.uid("FETCH", "1:*", "(FLAGS)")
    if typ != "OK":
        raise imaplib.IMAP4.error(f"FETCH FLAGS refused: {_reply(data, config)}")
    done: set[str] = set()
    for item in data:
        if not isinstance(item, bytes):
            continue
        uid = re.search(rb"\bUID (\d+)", item, re.IGNORECASE)
        flags = re.search(rb"\bFLAGS \(([^)]*)\)", item, re.IGNORECASE)
        # Keywords are case-insensitive.
        if uid and flags and DONE_KEYWORD.lower().encode() in flags.group(1).lower().split():
            done.add(uid.group(1).decode("ascii"))
    return [uid for uid in pending if uid not in done]


def _imap_body(data: Sequence[object]) -> bytes | None:
    """The BODY[] literal of a FETCH response, None when the message is gone."""
    for item in data:
        if (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], bytes)
                and b"BODY[]" in item[0].upper() and isinstance(item[1], bytes)):
            return item[1]
    return None


def _poll_imap(config: MailboxConfig, handle: Handler, timeout: float,
               context: ssl.SSLContext, max_messages: int, guard: PollGuard) -> PollResult:
    """SELECT, UID SEARCH the unflagged, FETCH each with PEEK, flag the processed, LOGOUT."""
    conn = _imap_login(config, timeout, context, guard)
    where = config.redacted()
    limits = guard.limits
    processed = failed = oversized = deferred = 0
    try:
        try:
            typ, data = conn.select(_imap_quote(_imap_utf7(config.folder)))
        except imaplib.IMAP4.readonly:
            raise MailboxError(f"{where}: folder {config.folder!r} is read-only, so "
                               "processed messages could not be flagged") from None
        if typ != "OK":
            raise MailboxError(f"{where}: cannot select folder {config.folder!r}: "
                               f"{_reply(data, config)}")
        pending = _imap_pending(conn, config)[:max_messages]
        for index, uid in enumerate(pending):
            size = _imap_size(conn, uid) or 0
            if size > limits.message_bytes:
                _too_big(config, f"UID {uid}", size, limits)
                oversized += 1
                continue
            if guard.late or guard.messages + size > limits.poll_bytes:
                deferred = len(pending) - index
                _deferred(config, guard, deferred)
                break
            # PEEK: a message we leave alone must not turn \Seen.
            typ, data = conn.uid("FETCH", uid, "(BODY.PEEK[])")
            raw = _imap_body(data) if typ == "OK" else None
            if raw is None:
                log.debug("%s: message UID %s vanished before FETCH", where, uid)
                continue
            if not _offer(config, handle, raw, f"UID {uid}"):
                failed += 1
                continue
            try:
                typ, reply = conn.uid("STORE", uid, "+FLAGS", f"({DONE_KEYWORD} \\Seen)")
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error as exc:
                typ, reply = "BAD", [str(exc)]
            if typ != "OK":
                log.warning("%s: cannot flag message UID %s: %s", where, uid,
                            _reply(reply, config))
                failed += 1
                continue
            processed += 1
    except MailboxError:
        _imap_close(conn)
        raise
    except Exception as exc:
        _imap_close(conn)
        raise MailboxError(
            f"{where}: IMAP session broke ({_why(guard, exc, config)}); handled messages "
            "not yet flagged will be offered again"
        ) from exc
    except BaseException:
        _imap_close(conn)
        raise
    try:
        conn.logout()
    except Exception:
        # The flags are stored already: a failed goodbye changes nothing.
        _imap_close(conn)
    return PollResult(processed + failed, processed, failed, oversized, deferred)

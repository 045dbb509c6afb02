"""The bounce-mailbox poller against real POP3 and IMAP servers on loopback."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
import ssl
import time
import traceback
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest

from mailbeacon.errors import ConfigError, MailbeaconError
from mailbeacon.inbound.mailbox import (
    DONE_KEYWORD,
    MailboxConfig,
    MailboxError,
    PollLimits,
    PollResult,
    poll_once,
)
from tests.inbound.mailservers import (
    Certificate,
    ImapServer,
    Pop3Server,
    _Connection,
    dot_stuffed,
    make_certificate,
)

USER = "bounces@example.com"
# Characters that need percent-encoding in a URL and quoting in IMAP.
PASSWORD = 'Zq9x@pa:ss"w\\rd/%Vv7'
WRONG = "Wr0ng@pass:Kk4"

VARIANTS = ["pop3", "pop3+stls", "pop3s", "imap", "imap+starttls", "imaps"]


def message(n: int, body: bytes = b"The message could not be delivered.\r\n") -> bytes:
    return (b"From: MAILER-DAEMON@mx.example.net\r\nTo: " + USER.encode() + b"\r\n"
            b"Subject: Undelivered Mail " + str(n).encode() + b"\r\n"
            b"Message-ID: <" + str(n).encode() + b"@mx.example.net>\r\n\r\n" + body)


def secrets_in(text: str, *passwords: str) -> list[str]:
    """Those of the passwords, raw or percent-encoded, that `text` shows."""
    forms = {form for p in passwords for form in (p, quote(p, safe=""))}
    return [form for form in forms if form in text]


class Recorder:
    """A handler that records what it is given and answers `verdict(raw)`."""

    def __init__(self, verdict: Callable[[bytes], bool] = lambda raw: True) -> None:
        self.verdict = verdict
        self.seen: list[bytes] = []

    def __call__(self, raw: bytes) -> bool:
        self.seen.append(raw)
        return self.verdict(raw)


@dataclass
class Mailbox:
    """A running test server and how to poll it."""

    server: Pop3Server | ImapServer
    url: str
    context: ssl.SSLContext

    def add(self, *messages: bytes, folder: str = "INBOX") -> None:
        for data in messages:
            if isinstance(self.server, Pop3Server):
                self.server.messages.append(data)
            else:
                self.server.add(data, folder)

    def waiting(self) -> list[bytes]:
        """Messages still to be processed: all of POP3's, IMAP's without the done flag."""
        if isinstance(self.server, Pop3Server):
            return list(self.server.messages)
        return [m.data for m in self.server.folders["INBOX"] if not m.has_flag(DONE_KEYWORD)]

    def config(self, **changes: Any) -> MailboxConfig:
        return dataclasses.replace(MailboxConfig.from_url(self.url), **changes)

    def poll(self, handle: Callable[[bytes], bool], **kwargs: Any) -> PollResult:
        kwargs.setdefault("ssl_context", self.context)
        return poll_once(kwargs.pop("config", None) or self.config(), handle, timeout=5,
                         **kwargs)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return make_certificate(tmp_path_factory.mktemp("cert"))


@pytest.fixture
def mailbox_factory(certificate: Certificate) -> Iterator[Callable[..., Mailbox]]:
    """make("imap+starttls", **server_options): a started server of that kind."""
    servers: list[Pop3Server | ImapServer] = []

    def make(variant: str, *, password: str = PASSWORD, **options: Any) -> Mailbox:
        scheme, _, starttls = variant.partition("+")
        context = certificate.server_context()
        options.update(username=USER, password=password,
                       tls=context if scheme.endswith("s") else None,
                       starttls=context if starttls else None)
        server: Pop3Server | ImapServer = (
            Pop3Server(**options) if scheme.startswith("pop3") else ImapServer(**options))
        server.start()
        servers.append(server)
        credentials = f"{quote(USER, safe='')}:{quote(password, safe='')}"
        url = f"{scheme}://{credentials}@127.0.0.1:{server.port}"
        return Mailbox(server, url, certificate.client_context())

    yield make
    for server in servers:
        server.stop()
        assert server.errors == []


@pytest.fixture(params=VARIANTS)
def mailbox(request: pytest.FixtureRequest, mailbox_factory: Callable[..., Mailbox]) -> Mailbox:
    return mailbox_factory(request.param)


# --- URLs ------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "protocol", "tls", "port"), [
    ("pop3://u:p@mail.example.com", "pop3", False, 110),
    ("pop3s://u:p@mail.example.com", "pop3", True, 995),
    ("imap://u:p@mail.example.com", "imap", False, 143),
    ("imaps://u:p@mail.example.com", "imap", True, 993),
    ("POP3S://u:p@Mail.Example.com:1995", "pop3", True, 1995),
    ("imaps://u:p@mail.example.com:10993/", "imap", True, 10993),
])
def test_url_schemes_and_default_ports(url: str, protocol: str, tls: bool, port: int) -> None:
    config = MailboxConfig.from_url(url)
    assert (config.protocol, config.tls, config.host, config.port) == (
        protocol, tls, "mail.example.com", port)
    assert (config.username, config.password, config.folder) == ("u", "p", "INBOX")


@pytest.mark.parametrize(("url", "folder"), [
    ("imaps://u:p@host/Bounces", "Bounces"),
    ("imaps://u:p@host/INBOX.Bounces/", "INBOX.Bounces"),
    ("imap://u:p@host/Archive/Bounces", "Archive/Bounces"),
    ("imap://u:p@host/R%C3%BCckl%C3%A4ufer%20Mail", "Rückläufer Mail"),
])
def test_url_imap_folder(url: str, folder: str) -> None:
    assert MailboxConfig.from_url(url).folder == folder


def test_url_percent_encoded_credentials() -> None:
    config = MailboxConfig.from_url(
        "pop3s://bounces%40example.com:p%40ss%3Aw%2Frd%25@mail.example.com")
    assert (config.username, config.password) == ("bounces@example.com", "p@ss:w/rd%")
    # An unencoded @ or : in the password still parses: the host follows the last @.
    config = MailboxConfig.from_url("imaps://bounces:p@ss:word@mail.example.com")
    assert (config.username, config.password, config.host) == (
        "bounces", "p@ss:word", "mail.example.com")


def test_password_never_shown() -> None:
    config = MailboxConfig.from_url(f"pop3s://bounces:{quote(PASSWORD, safe='')}@127.0.0.1")
    assert config.password == PASSWORD
    for text in (repr(config), str(config), config.redacted()):
        assert secrets_in(text, PASSWORD) == []
    assert config.redacted() == "pop3s://bounces@127.0.0.1:995"


@pytest.mark.parametrize(("url", "redacted"), [
    ("imaps://u:p@[::1]/Bounces", "imaps://u@[::1]:993/Bounces"),
    ("imap://bounces%40example.com:p@host:1143", "imap://bounces%40example.com@host:1143"),
    ("pop3://u:p@host", "pop3://u@host:110"),
])
def test_redacted(url: str, redacted: str) -> None:
    assert MailboxConfig.from_url(url).redacted() == redacted


@pytest.mark.parametrize(("url", "complaint"), [
    ("http://bounces:Zq9xSecretVv7@host", "must start with pop3://"),
    ("smtp://bounces:Zq9xSecretVv7@host", "(got smtp://)"),
    ("", "no scheme"),
    ("pop3://host", "needs USER:PASSWORD@"),
    ("pop3://bounces@host", "needs USER:PASSWORD@"),
    ("pop3s://bounces:Zq9xSecretVv7@", "no host"),
    ("pop3://bounces:Zq9x/SecretVv7@host", "bad port"),  # unencoded / ends the host part
    ("imap://bounces:Zq9x#SecretVv7@host", "bad port"),
    ("imap://bounces:Zq9x?SecretVv7@host", "bad port"),
    ("pop3://bounces:Zq9xSecretVv7@host:0", "bad port"),
    ("pop3://bounces:Zq9xSecretVv7@host:99999", "bad port"),
    ("pop3s://bounces:Zq9xSecretVv7@host/INBOX", "no folders"),
    ("imaps://bounces:Zq9xSecretVv7@host/?debug=1", "? or #"),
])
def test_bad_url_is_config_error_without_password(url: str, complaint: str) -> None:
    with pytest.raises(ConfigError) as caught:
        MailboxConfig.from_url(url)
    assert complaint in str(caught.value)
    shown = "".join(traceback.format_exception(caught.value))
    assert "Zq9x" not in shown and "Vv7" not in shown


def test_unknown_protocol() -> None:
    with pytest.raises(ConfigError):
        MailboxConfig("smtp", False, "host", 25, "u", "p")


# --- polling ---------------------------------------------------------------------------


def test_only_processed_messages_are_removed(mailbox: Mailbox) -> None:
    messages = [message(1), message(2), message(3)]
    mailbox.add(*messages)
    handle = Recorder(lambda raw: raw != messages[1])
    assert mailbox.poll(handle) == PollResult(fetched=3, processed=2, failed=1)
    assert handle.seen == messages
    assert mailbox.waiting() == [messages[1]]
    server = mailbox.server
    # pop3+stls and imap+starttls upgrade; plain pop3/imap log in without TLS.
    assert server.logins == [mailbox.url.split(":")[0] in ("pop3s", "imaps")
                             or bool(server.starttls)]
    if isinstance(server, ImapServer):
        first, second, third = server.folders["INBOX"]
        assert first.flags == third.flags == {DONE_KEYWORD, "\\Seen"}
        assert second.flags == set()  # fetched with PEEK: still unread for a human
        assert len(server.folders["INBOX"]) == 3  # flagged, not deleted
    else:
        assert server.commands[-1] == "QUIT"


def test_handler_exception_keeps_message(mailbox: Mailbox,
                                         caplog: pytest.LogCaptureFixture) -> None:
    messages = [message(1), message(2), message(3)]
    mailbox.add(*messages)
    def refuse_second(raw: bytes) -> bool:
        if raw == messages[1]:
            raise RuntimeError("database is locked")
        return True

    handle = Recorder(refuse_second)

    with caplog.at_level(logging.DEBUG, "mailbeacon"):
        assert mailbox.poll(handle) == PollResult(3, 2, 1)
    assert handle.seen == messages
    assert mailbox.waiting() == [messages[1]]
    [failure] = [r for r in caplog.records if r.levelno >= logging.WARNING and r.exc_info]
    assert "handler failed" in failure.getMessage()
    assert "<2@mx.example.net>" in failure.getMessage()
    assert "127.0.0.1" in failure.getMessage()
    assert secrets_in(caplog.text, PASSWORD) == []


def test_second_poll_offers_only_unprocessed(mailbox: Mailbox) -> None:
    messages = [message(1), message(2), message(3)]
    mailbox.add(*messages)
    assert mailbox.poll(lambda raw: raw != messages[1]) == PollResult(3, 2, 1)
    mailbox.add(message(4))
    handle = Recorder()
    assert mailbox.poll(handle) == PollResult(2, 2, 0)
    assert handle.seen == [messages[1], message(4)]
    assert mailbox.waiting() == []
    assert mailbox.poll(handle) == PollResult(0, 0, 0)


def test_imap_without_keyword_search_filters_flags_itself(
        mailbox_factory: Callable[..., Mailbox]) -> None:
    mailbox = mailbox_factory("imap", keyword_search=False)
    messages = [message(1), message(2), message(3)]
    mailbox.add(*messages)
    assert mailbox.poll(lambda raw: raw != messages[1]) == PollResult(3, 2, 1)
    handle = Recorder()
    assert mailbox.poll(handle) == PollResult(1, 1, 0)
    assert handle.seen == [messages[1]]
    assert mailbox.waiting() == []


@pytest.mark.parametrize("variant", VARIANTS)
def test_wrong_password(mailbox_factory: Callable[..., Mailbox], variant: str,
                        caplog: pytest.LogCaptureFixture) -> None:
    mailbox = mailbox_factory(variant)
    mailbox.add(message(1))
    with caplog.at_level(logging.DEBUG), pytest.raises(MailboxError) as caught:
        mailbox.poll(lambda raw: True, config=mailbox.config(password=WRONG))
    error = caught.value
    assert isinstance(error, MailbeaconError) and isinstance(error, OSError)
    assert "127.0.0.1" in str(error) and "login refused" in str(error)
    shown = "".join(traceback.format_exception(error)) + caplog.text
    assert secrets_in(shown, WRONG, PASSWORD) == []
    assert mailbox.waiting() == [message(1)]
    assert mailbox.server.logins == []


def test_lines_starting_with_a_dot_survive(mailbox: Mailbox) -> None:
    body = b".\r\n..\r\n...\r\n.hidden\r\n. leading space\r\nmiddle . dot\r\n.\r\n"
    original = message(1, body)
    assert b"\r\n..\r\n" in dot_stuffed(original)  # the server does stuff them
    mailbox.add(original)
    handle = Recorder()
    assert mailbox.poll(handle) == PollResult(1, 1, 0)
    assert handle.seen == [original]


def test_8bit_message_survives(mailbox: Mailbox) -> None:
    high = bytes(range(0x80, 0x100))
    body = (b"Content-Type: text/plain; charset=iso-8859-1\r\n\r\n"
            + high + b"\r\n"
            + b"\x00\x01\x1b[0m tab\there, bare CR\rinside\r\n"
            + b"\rstarts with CR\r\n"
            + b"trailing spaces   \r\n\r\n\r\n"
            + b"x" * 5000 + b"\r\n"  # over poplib's 2048-byte line limit
            + "Rückläufer ☃".encode() + b"\r\n")
    original = message(1, body)
    mailbox.add(original)
    handle = Recorder()
    assert mailbox.poll(handle) == PollResult(1, 1, 0)
    assert handle.seen == [original]


def test_max_messages(mailbox: Mailbox) -> None:
    messages = [message(1), message(2), message(3)]
    mailbox.add(*messages)
    assert mailbox.poll(lambda raw: True, max_messages=2) == PollResult(2, 2, 0)
    assert mailbox.waiting() == [messages[2]]


@pytest.mark.parametrize("variant", ["pop3s", "pop3+stls", "imaps", "imap+starttls"])
def test_default_context_rejects_self_signed_certificate(
        mailbox_factory: Callable[..., Mailbox], variant: str) -> None:
    mailbox = mailbox_factory(variant)
    mailbox.add(message(1))
    with pytest.raises(MailboxError, match="certificate verify failed") as caught:
        mailbox.poll(lambda raw: True, ssl_context=None)
    assert secrets_in(str(caught.value), PASSWORD) == []
    assert mailbox.server.logins == []
    assert mailbox.waiting() == [message(1)]


@pytest.mark.parametrize("scheme", ["pop3", "imaps"])
def test_unreachable_server(scheme: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = MailboxConfig.from_url(f"{scheme}://u:{quote(PASSWORD, safe='')}@127.0.0.1:{port}")
    with pytest.raises(MailboxError, match=f"127.0.0.1:{port}: cannot connect") as caught:
        poll_once(config, lambda raw: True, timeout=5)
    assert secrets_in(str(caught.value), PASSWORD) == []


def test_pop3_connection_lost_before_quit_deletes_nothing(
        mailbox_factory: Callable[..., Mailbox]) -> None:
    mailbox = mailbox_factory("pop3", drop_after_retr=2)
    messages = [message(1), message(2), message(3)]
    mailbox.add(*messages)
    handle = Recorder()
    with pytest.raises(MailboxError, match="nothing was deleted"):
        mailbox.poll(handle)
    assert handle.seen == messages[:2]
    assert mailbox.waiting() == messages


def test_pop3_message_the_server_refuses_is_skipped(
        mailbox_factory: Callable[..., Mailbox]) -> None:
    mailbox = mailbox_factory("pop3s", refuse_retr={2})
    messages = [message(1), message(2), message(3)]
    mailbox.add(*messages)
    handle = Recorder()
    assert mailbox.poll(handle) == PollResult(3, 2, 1)
    assert handle.seen == [messages[0], messages[2]]
    assert mailbox.waiting() == [messages[1]]


@pytest.mark.parametrize("variant", ["pop3", "imap"])
def test_plain_login_warned_once(mailbox_factory: Callable[..., Mailbox], variant: str,
                                 caplog: pytest.LogCaptureFixture) -> None:
    mailbox = mailbox_factory(variant)
    with caplog.at_level(logging.WARNING, "mailbeacon"):
        mailbox.poll(Recorder())
        mailbox.poll(Recorder())
    [warning] = [r.getMessage() for r in caplog.records]
    assert "logging in without TLS" in warning and "127.0.0.1" in warning


@pytest.mark.parametrize(("folder", "wire_name"), [
    ("Bounces", "Bounces"),
    ("Mail & Bounces", "Mail &- Bounces"),
    ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),  # RFC 3501 5.1.3
])
def test_imap_folder(mailbox_factory: Callable[..., Mailbox], folder: str,
                     wire_name: str) -> None:
    mailbox = mailbox_factory("imaps")
    assert isinstance(mailbox.server, ImapServer)
    mailbox.add(message(1))
    mailbox.add(message(2), folder=wire_name)
    mailbox.url += "/" + quote(folder)
    handle = Recorder()
    assert mailbox.poll(handle) == PollResult(1, 1, 0)
    assert handle.seen == [message(2)]
    assert mailbox.server.folders[wire_name][0].has_flag(DONE_KEYWORD)
    assert mailbox.waiting() == [message(1)]  # INBOX untouched


def test_imap_missing_folder(mailbox_factory: Callable[..., Mailbox]) -> None:
    mailbox = mailbox_factory("imap")
    mailbox.url += "/Missing"
    with pytest.raises(MailboxError, match="cannot select folder 'Missing'"):
        mailbox.poll(lambda raw: True)


def test_imap_non_ascii_password_uses_auth_plain(
        mailbox_factory: Callable[..., Mailbox]) -> None:
    mailbox = mailbox_factory("imaps", password="pässwörd☃", auth_plain=True)
    mailbox.add(message(1))
    assert mailbox.poll(lambda raw: True) == PollResult(1, 1, 0)
    assert "AUTHENTICATE" in mailbox.server.commands


def test_imap_non_ascii_password_without_auth_plain(
        mailbox_factory: Callable[..., Mailbox]) -> None:
    mailbox = mailbox_factory("imaps", password="pässwörd☃")
    with pytest.raises(MailboxError, match="AUTH=PLAIN") as caught:
        mailbox.poll(lambda raw: True)
    assert secrets_in(str(caught.value), "pässwörd☃") == []


def test_async_handler_is_not_taken_for_success(
        mailbox_factory: Callable[..., Mailbox], caplog: pytest.LogCaptureFixture) -> None:
    mailbox = mailbox_factory("pop3")
    mailbox.add(message(1))

    async def handle(raw: bytes) -> bool:
        return True

    assert mailbox.poll(handle) == PollResult(1, 0, 1)  # type: ignore[arg-type]
    assert mailbox.waiting() == [message(1)]
    assert "not a bool" in caplog.text


def test_max_messages_must_be_positive() -> None:
    with pytest.raises(ValueError):
        poll_once(MailboxConfig.from_url("pop3://u:p@127.0.0.1"), lambda raw: True,
                  max_messages=0)


# --- broken and hostile servers (every poll ends in a result or a MailboxError) ---------


def _answer(*lines: bytes) -> Callable[..., bool]:
    """A hostile answer: these lines, whatever was asked."""

    def send(conn: _Connection, *_: Any) -> bool:
        conn.send(*lines)
        return True

    return send


def _flood(line: bytes, first: bytes = b"", total: int = 64 * 2**20) -> Callable[..., bool]:
    """`first`, then endless (well, `total` bytes of) the same line, until the client
    hangs up."""

    def send(conn: _Connection, *args: Any) -> bool:
        chunk = line * (65536 // len(line))
        with contextlib.suppress(OSError):
            conn.sock.sendall(first)
            for _ in range(total // len(chunk)):
                conn.sock.sendall(chunk)
        return True

    return send


@pytest.mark.parametrize("stat", [b"+OK lots many", b"+OK 3", b"+OK", b"+OK 1 2 \xff\xfe x"])
def test_malformed_pop3_stat_is_a_mailbox_error(mailbox_factory: Callable[..., Mailbox],
                                                stat: bytes) -> None:
    mailbox = mailbox_factory("pop3s", hostile={"STAT": _answer(stat)})
    mailbox.add(message(1))
    if stat.startswith(b"+OK 1 2"):  # trailing words after the numbers are allowed
        assert mailbox.poll(Recorder()).processed == 1
        return
    with pytest.raises(MailboxError, match="malformed STAT answer") as caught:
        mailbox.poll(Recorder())
    assert secrets_in(str(caught.value), PASSWORD) == []
    assert mailbox.waiting() == [message(1)]


def test_non_ascii_pop3_capa_is_read_as_bytes(mailbox_factory: Callable[..., Mailbox],
                                              certificate: Certificate) -> None:
    mailbox = mailbox_factory("pop3+stls")
    stls = mailbox.server.hostile
    stls["CAPA"] = _answer(b"+OK caps", b"USER", b"X-NAME \xc3\x28 \xff", b"STLS", b".")
    mailbox.add(message(1))
    assert mailbox.poll(Recorder()).processed == 1
    assert mailbox.server.logins == [True]  # STLS was still found and used


def test_imap_search_words_that_are_not_uids_are_skipped(
        mailbox_factory: Callable[..., Mailbox], caplog: pytest.LogCaptureFixture) -> None:
    mailbox = mailbox_factory("imap", hostile={
        "UID SEARCH": lambda conn, tag, args: _answer(
            b"* SEARCH 1 abc 99999999999999999999", tag.encode() + b" OK done")(conn)})
    mailbox.add(message(1))
    assert mailbox.poll(Recorder()).processed == 1
    assert "not UIDs" in caplog.text


@pytest.mark.parametrize("variant", ["pop3", "imap"])
def test_endless_lines_end_the_poll_within_the_limit(mailbox_factory: Callable[..., Mailbox],
                                                     variant: str) -> None:
    """A server that answers with endless lines (1.2 GB in 32 s before): the poll stops
    once the protocol-line budget is read, with memory to match."""
    line = b"* OK " + b"x" * 1000 + b"\r\n"
    hostile = {"CAPA": _flood(line, b"+OK capabilities\r\n")} if variant == "pop3" \
        else {"SELECT": _flood(line)}
    mailbox = mailbox_factory(variant, hostile=hostile)
    limits = PollLimits(chatter_bytes=2**20)
    tracemalloc.start()
    try:
        with pytest.raises(MailboxError, match="bytes of protocol lines"):
            mailbox.poll(Recorder(), limits=limits)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, peak


def test_a_huge_imap_literal_is_never_read(mailbox_factory: Callable[..., Mailbox]) -> None:
    """A server announcing a 300 MB literal (its size said small): refused unread."""

    def fetch(conn: _Connection, tag: str, args: list[str]) -> bool:
        if "RFC822.SIZE" in args[-1].upper():
            return False  # answered honestly: 100 bytes or so
        conn.sock.sendall(b"* 1 FETCH (UID 1 BODY[] {300000000}\r\n" + b"x" * 65536)
        return True

    mailbox = mailbox_factory("imap", hostile={"UID FETCH": fetch})
    mailbox.add(message(1))
    tracemalloc.start()
    try:
        with pytest.raises(MailboxError, match="300000000-byte literal"):
            mailbox.poll(Recorder(), limits=PollLimits(message_bytes=2**20))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, peak


@pytest.mark.parametrize("variant", ["pop3", "imaps"])
def test_oversized_messages_stay_on_the_server(mailbox_factory: Callable[..., Mailbox],
                                               variant: str,
                                               caplog: pytest.LogCaptureFixture) -> None:
    mailbox = mailbox_factory(variant)
    big = message(2, b"x" * 200 + b"\r\n" * 100_000)
    mailbox.add(message(1), big, message(3))
    handler = Recorder()
    result = mailbox.poll(handler, limits=PollLimits(message_bytes=100_000))
    assert (result.processed, result.oversized) == (2, 1)
    assert mailbox.waiting() == [big] and len(handler.seen) == 2
    assert f"has {len(big)} bytes, over the 100000-byte limit: left on the server" in caplog.text


def test_a_pop3_server_lying_about_a_size_gets_no_further(
        mailbox_factory: Callable[..., Mailbox]) -> None:
    """LIST says 10 bytes, RETR sends 300 KB: read and dropped, left on the server."""
    mailbox = mailbox_factory("pop3", hostile={
        "LIST": lambda conn, arg: arg == "2" and _answer(b"+OK 2 10")(conn)})
    big = message(2, b"y" * 70 + b"\r\n" * 100_000)
    mailbox.add(message(1), big, message(3))
    result = mailbox.poll(Recorder(), limits=PollLimits(message_bytes=100_000))
    assert (result.processed, result.oversized) == (2, 1)
    assert mailbox.waiting() == [big]


@pytest.mark.parametrize("variant", ["pop3", "imap"])
def test_the_poll_byte_budget_leaves_the_rest_for_the_next_poll(
        mailbox_factory: Callable[..., Mailbox], variant: str) -> None:
    mailbox = mailbox_factory(variant)
    messages = [message(n, (b"z" * 78 + b"\r\n") * 500) for n in range(5)]  # ~41 KB each
    mailbox.add(*messages)
    limits = PollLimits(poll_bytes=100_000)
    first = mailbox.poll(Recorder(), limits=limits)
    assert (first.processed, first.deferred) == (2, 3)
    second = mailbox.poll(Recorder(), limits=limits)
    assert (second.processed, second.deferred) == (2, 1)
    assert mailbox.waiting() == messages[4:]


@pytest.mark.parametrize("variant", ["pop3s", "imap"])
def test_a_trickling_server_is_cut_off_at_the_deadline(
        mailbox_factory: Callable[..., Mailbox], variant: str) -> None:
    """A byte every 0.2 s never trips the 5 s read timeout; the poll's deadline cuts it."""

    def trickle(conn: _Connection, *args: Any) -> bool:
        with contextlib.suppress(OSError):
            for _ in range(300):
                conn.sock.sendall(b"+" if variant == "pop3s" else b"*")
                time.sleep(0.2)
        return True

    mailbox = mailbox_factory(variant, hostile={"STAT": trickle, "SELECT": trickle})
    start = time.monotonic()
    with pytest.raises(MailboxError, match="cut off after 1 s"):
        mailbox.poll(Recorder(), limits=PollLimits(seconds=1))
    assert time.monotonic() - start < 30  # 1 s, then the 5 s grace; never 60 s


def test_poll_once_raises_nothing_but_mailbox_error(
        mailbox_factory: Callable[..., Mailbox]) -> None:
    """A non-ASCII capability list, which imaplib cannot decode."""
    mailbox = mailbox_factory("imap", hostile={
        "CAPABILITY": lambda conn, tag, args: _answer(
            b"* CAPABILITY IMAP4rev1 \xff\xfe", tag.encode() + b" OK")(conn)})
    with pytest.raises(MailboxError):
        mailbox.poll(Recorder())

"""Test-only POP3 and IMAP servers on 127.0.0.1, each serving in a thread.

They hold their messages in memory for tests to inspect, speak just enough of each
protocol for poplib and imaplib, and can wrap connections in TLS from the start
(pop3s, imaps) or offer STLS / STARTTLS. `make_certificate` makes the self-signed
certificate (CN and SAN 127.0.0.1) they use.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import socket
import socketserver
import ssl
import sys
import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# --- certificate -----------------------------------------------------------------------


@dataclass(frozen=True)
class Certificate:
    cert_file: Path
    key_file: Path
    pem: str

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A verifying context that trusts this certificate alone."""
        return ssl.create_default_context(cadata=self.pem)


def make_certificate(directory: Path) -> Certificate:
    """A self-signed certificate for 127.0.0.1, valid for a day either side of now."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False,
            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(pem)
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return Certificate(cert_file, key_file, pem.decode("ascii"))


# --- the server frame ------------------------------------------------------------------


class _Connection:
    """One client connection: line reading, sending, and a switch to TLS midway."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.file: BinaryIO = sock.makefile("rb")
        self.tls = isinstance(sock, ssl.SSLSocket)

    def readline(self) -> bytes:
        return self.file.readline(1 << 20)

    def send(self, *lines: str | bytes) -> None:
        self.sock.sendall(b"".join(
            (line.encode("utf-8") if isinstance(line, str) else line) + b"\r\n"
            for line in lines))

    def start_tls(self, context: ssl.SSLContext) -> None:
        # The client says nothing before our go-ahead, so the buffer holds nothing.
        self.file.close()
        self.sock = context.wrap_socket(self.sock, server_side=True)
        self.file = self.sock.makefile("rb")
        self.tls = True

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class _Server(socketserver.ThreadingTCPServer):
    """Accepts on 127.0.0.1 (free port) and runs `session` per connection in a thread."""

    daemon_threads = False
    block_on_close = True  # stop() waits for sessions, so tests see their final state

    def __init__(self, tls: ssl.SSLContext | None, starttls: ssl.SSLContext | None) -> None:
        super().__init__(("127.0.0.1", 0), socketserver.BaseRequestHandler)
        self.tls = tls  # TLS from the start
        self.starttls = starttls  # offer STLS / STARTTLS with this context
        self.lock = threading.Lock()
        self.errors: list[BaseException] = []  # bugs in the server, not client trouble
        self.commands: list[str] = []  # command names received, for tests to check
        self.logins: list[bool] = []  # one per successful login: was it over TLS?
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def finish_request(self, request: Any, client_address: Any) -> None:
        sock: socket.socket = request
        sock.settimeout(10)  # before the handshake too: a stuck client must not hang stop()
        # Replies go out in several writes; without this, delayed ACKs cost 40 ms each.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_side=True)
        conn = _Connection(sock)
        try:
            self.session(conn)
        finally:
            conn.close()

    def session(self, conn: _Connection) -> None:
        raise NotImplementedError

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        # A client that drops the line or rejects our certificate is not a server bug.
        if error is not None and not isinstance(error, OSError):
            self.errors.append(error)

    def record(self, command: str) -> None:
        with self.lock:
            self.commands.append(command)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> _Server:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# --- POP3 ------------------------------------------------------------------------------


def dot_stuffed(message: bytes) -> bytes:
    """A message as RETR sends it: lines starting with "." doubled, then "." alone."""
    if message and not message.endswith(b"\r\n"):
        message += b"\r\n"
    lines = message.split(b"\r\n")[:-1]
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n"
                    for line in lines) + b".\r\n"


class Pop3Server(_Server):
    """POP3 (RFC 1939, CAPA and STLS of RFC 2449/2595); `messages` is the maildrop.

    Deletions apply at QUIT only, as the RFC says. With `drop_after_retr=n` the server
    hangs up right after the n-th RETR of a session; RETR of a message number in
    `refuse_retr` gets -ERR. `hostile` maps a command (CAPA, STAT, LIST...) to a
    function that may answer it instead, as a broken or hostile server would: it gets
    the connection and the argument and returns True when it answered.
    """

    def __init__(self, *, username: str = "bounces", password: str = "s3cret",
                 tls: ssl.SSLContext | None = None, starttls: ssl.SSLContext | None = None,
                 drop_after_retr: int | None = None, refuse_retr: Collection[int] = (),
                 hostile: Mapping[str, Callable[[_Connection, str], bool]] | None = None
                 ) -> None:
        super().__init__(tls, starttls)
        self.hostile = dict(hostile or {})
        self.refuse_retr = refuse_retr
        self.username = username
        self.password = password
        self.drop_after_retr = drop_after_retr
        self.messages: list[bytes] = []

    def session(self, conn: _Connection) -> None:
        conn.send("+OK test POP3 server ready")
        user: str | None = None
        maildrop: list[bytes] | None = None  # the messages as of login, numbered from 1
        deleted: set[int] = set()
        retrieved = 0
        while line := conn.readline():
            verb, _, arg = line.rstrip(b"\r\n").decode("utf-8", "replace").partition(" ")
            verb = verb.upper()
            self.record(verb)
            if verb in self.hostile and self.hostile[verb](conn, arg):
                continue
            if verb == "CAPA":
                stls = ["STLS"] if self.starttls and not conn.tls and maildrop is None else []
                conn.send("+OK capabilities follow", "USER", "UIDL", *stls, ".")
            elif verb == "STLS" and self.starttls and not conn.tls and maildrop is None:
                conn.send("+OK begin TLS")
                conn.start_tls(self.starttls)
            elif verb == "USER" and maildrop is None:
                user = arg
                conn.send("+OK send PASS")
            elif verb == "PASS" and maildrop is None and user is not None:
                if (user, arg) != (self.username, self.password):
                    user = None
                    conn.send("-ERR [AUTH] invalid user name or password")
                    continue
                with self.lock:
                    maildrop = list(self.messages)
                    self.logins.append(conn.tls)
                conn.send(f"+OK {len(maildrop)} messages")
            elif verb == "QUIT":
                if maildrop is not None:
                    with self.lock:
                        for number in deleted:
                            gone = maildrop[number - 1]
                            self.messages = [m for m in self.messages if m is not gone]
                conn.send("+OK bye")
                return
            elif maildrop is None:
                conn.send("-ERR log in first")
            elif verb == "NOOP":
                conn.send("+OK")
            elif verb == "RSET":
                deleted.clear()
                conn.send("+OK")
            elif verb == "STAT":
                live = [m for n, m in enumerate(maildrop, 1) if n not in deleted]
                conn.send(f"+OK {len(live)} {sum(map(len, live))}")
            elif verb in ("LIST", "UIDL") and not arg:
                conn.send("+OK", *(f"{n} {self._describe(verb, m)}"
                                   for n, m in enumerate(maildrop, 1) if n not in deleted), ".")
            elif verb in ("LIST", "UIDL", "RETR", "DELE"):
                number = int(arg) if arg.isdigit() else 0
                if not 0 < number <= len(maildrop) or number in deleted:
                    conn.send("-ERR no such message")
                elif verb == "RETR" and number in self.refuse_retr:
                    conn.send("-ERR [IN-USE] message is being delivered")
                elif verb in ("LIST", "UIDL"):
                    conn.send(f"+OK {number} {self._describe(verb, maildrop[number - 1])}")
                elif verb == "DELE":
                    deleted.add(number)
                    conn.send(f"+OK message {number} deleted")
                else:
                    message = maildrop[number - 1]
                    conn.send(f"+OK {len(message)} octets", dot_stuffed(message)[:-2])
                    retrieved += 1
                    if retrieved == self.drop_after_retr:
                        return
            else:
                conn.send("-ERR unknown command")

    @staticmethod
    def _describe(verb: str, message: bytes) -> str:
        return str(len(message)) if verb == "LIST" else hashlib.sha1(message).hexdigest()


# --- IMAP ------------------------------------------------------------------------------


@dataclass
class ImapMessage:
    uid: int
    data: bytes
    flags: set[str] = field(default_factory=set)

    def has_flag(self, flag: str) -> bool:
        return flag.lower() in {f.lower() for f in self.flags}  # flags ignore case


def _tokens(text: str) -> list[str]:
    """Arguments of a command: atoms, quoted strings (unquoted), (lists) kept whole."""
    tokens: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == " ":
            i += 1
        elif text[i] == '"':
            chars: list[str] = []
            i += 1
            while text[i] != '"':
                if text[i] == "\\":
                    i += 1
                chars.append(text[i])
                i += 1
            tokens.append("".join(chars))
            i += 1
        elif text[i] == "(":
            end = text.index(")", i) + 1
            tokens.append(text[i:end])
            i = end
        else:
            end = text.find(" ", i)
            end = len(text) if end < 0 else end
            tokens.append(text[i:end])
            i = end
    return tokens


def _uid_set(spec: str, messages: list[ImapMessage]) -> Iterator[tuple[int, ImapMessage]]:
    """(sequence number, message) of the messages a UID set like 1,3:5,7:* names."""
    top = max((m.uid for m in messages), default=0)
    wanted: set[int] = set()
    for part in spec.split(","):
        first, _, last = part.partition(":")
        low = top if first == "*" else int(first)
        high = low if not last else top if last == "*" else int(last)
        wanted.update(range(min(low, high), max(low, high) + 1))
    for seq, message in enumerate(messages, 1):
        if message.uid in wanted:
            yield seq, message


class ImapServer(_Server):
    """IMAP4rev1, just what imaplib and the poller need; `folders` maps name -> messages.

    Folder names are kept as they go over the wire (modified UTF-7). With
    `keyword_search=False` SEARCH answers BAD to KEYWORD, like some servers do.
    `auth_plain` offers AUTHENTICATE PLAIN (UTF-8 credentials). `hostile` maps a command
    (SELECT, UID SEARCH...) to a function that may answer it instead: it gets the
    connection, the tag and the arguments and returns True when it answered.
    """

    def __init__(self, *, username: str = "bounces", password: str = "s3cret",
                 tls: ssl.SSLContext | None = None, starttls: ssl.SSLContext | None = None,
                 keyword_search: bool = True, auth_plain: bool = False,
                 hostile: Mapping[str, Callable[[_Connection, str, list[str]], bool]] | None
                 = None) -> None:
        super().__init__(tls, starttls)
        self.hostile = dict(hostile or {})
        self.username = username
        self.password = password
        self.keyword_search = keyword_search
        self.auth_plain = auth_plain
        self.folders: dict[str, list[ImapMessage]] = {"INBOX": []}
        self._next_uid = 1

    def add(self, data: bytes, folder: str = "INBOX") -> ImapMessage:
        with self.lock:
            message = ImapMessage(self._next_uid, data)
            self._next_uid += 1
            self.folders.setdefault(folder, []).append(message)
        return message

    def session(self, conn: _Connection) -> None:
        conn.send("* OK test IMAP4rev1 server ready")
        logged_in = False
        selected: list[ImapMessage] | None = None
        while line := conn.readline():
            tag, _, rest = line.rstrip(b"\r\n").decode("utf-8", "replace").partition(" ")
            verb, _, rest = rest.partition(" ")
            verb = verb.upper()
            args = _tokens(rest)
            if verb == "UID" and args:
                verb = "UID " + args.pop(0).upper()
            self.record(verb)
            if verb in self.hostile and self.hostile[verb](conn, tag, args):
                continue
            ok = f"{tag} OK {verb} completed"
            if verb == "CAPABILITY":
                caps = ["IMAP4rev1"]
                if self.starttls and not conn.tls:
                    caps.append("STARTTLS")
                if self.auth_plain:
                    caps.append("AUTH=PLAIN")
                conn.send("* CAPABILITY " + " ".join(caps), ok)
            elif verb == "NOOP":
                conn.send(ok)
            elif verb == "LOGOUT":
                conn.send("* BYE logging out", ok)
                return
            elif verb == "STARTTLS" and self.starttls and not conn.tls and not logged_in:
                conn.send(f"{tag} OK begin TLS")
                conn.start_tls(self.starttls)
            elif verb == "LOGIN" and not logged_in and len(args) == 2:
                logged_in = self._login(conn, tag, args[0], args[1])
            elif verb == "AUTHENTICATE" and self.auth_plain and args == ["PLAIN"]:
                conn.send("+ ")
                answer = base64.b64decode(conn.readline().strip()).decode("utf-8")
                _authzid, user, password = answer.split("\0")
                logged_in = self._login(conn, tag, user, password)
            elif not logged_in:
                conn.send(f"{tag} BAD log in first")
            elif verb == "SELECT" and len(args) == 1:
                name = "INBOX" if args[0].upper() == "INBOX" else args[0]
                selected = self.folders.get(name)
                if selected is None:
                    conn.send(f"{tag} NO [NONEXISTENT] no such mailbox")
                    continue
                conn.send(f"* {len(selected)} EXISTS", "* 0 RECENT",
                          r"* FLAGS (\Answered \Flagged \Deleted \Seen \Draft)",
                          r"* OK [PERMANENTFLAGS (\Answered \Flagged \Deleted \Seen \Draft \*)]",
                          "* OK [UIDVALIDITY 1]", f"* OK [UIDNEXT {self._next_uid}]",
                          f"{tag} OK [READ-WRITE] SELECT completed")
            elif selected is None:
                conn.send(f"{tag} BAD select a mailbox first")
            elif verb == "UID SEARCH":
                self._search(conn, tag, args, selected)
            elif verb == "UID FETCH" and len(args) == 2:
                self._fetch(conn, args[0], args[1].strip("()").upper().split(), selected)
                conn.send(ok)
            elif verb == "UID STORE" and len(args) == 3 and args[1].upper().startswith("+FLAGS"):
                with self.lock:
                    for seq, message in _uid_set(args[0], selected):
                        message.flags.update(args[2].strip("()").split())
                        if not args[1].upper().endswith(".SILENT"):
                            conn.send(f"* {seq} FETCH (UID {message.uid} "
                                      f"FLAGS ({' '.join(sorted(message.flags))}))")
                conn.send(ok)
            else:
                conn.send(f"{tag} BAD unknown command or arguments")

    def _login(self, conn: _Connection, tag: str, user: str, password: str) -> bool:
        if (user, password) != (self.username, self.password):
            conn.send(f"{tag} NO [AUTHENTICATIONFAILED] invalid credentials")
            return False
        with self.lock:
            self.logins.append(conn.tls)
        conn.send(f"{tag} OK logged in")
        return True

    def _search(self, conn: _Connection, tag: str, criteria: list[str],
                messages: list[ImapMessage]) -> None:
        words = [c.upper() for c in criteria]
        if "KEYWORD" in words and not self.keyword_search:
            conn.send(f"{tag} BAD KEYWORD search not supported")
            return
        match: Callable[[ImapMessage], bool]
        if words == ["ALL"]:
            match = lambda m: True  # noqa: E731
        elif words[:2] == ["NOT", "KEYWORD"] and len(words) == 3:
            match = lambda m: not m.has_flag(criteria[2])  # noqa: E731
        elif words[:1] == ["KEYWORD"] and len(words) == 2:
            match = lambda m: m.has_flag(criteria[1])  # noqa: E731
        else:
            conn.send(f"{tag} BAD search criterion not supported")
            return
        with self.lock:
            uids = [str(m.uid) for m in messages if match(m)]
        conn.send(" ".join(["* SEARCH", *uids]), f"{tag} OK SEARCH completed")

    def _fetch(self, conn: _Connection, uid_set: str, items: list[str],
               messages: list[ImapMessage]) -> None:
        with self.lock:
            for seq, message in _uid_set(uid_set, messages):
                head = f"* {seq} FETCH (UID {message.uid}"
                if "FLAGS" in items:
                    head += f" FLAGS ({' '.join(sorted(message.flags))})"
                if "RFC822.SIZE" in items:
                    head += f" RFC822.SIZE {len(message.data)}"
                if "BODY.PEEK[]" in items or "BODY[]" in items:
                    if "BODY[]" in items:
                        message.flags.add("\\Seen")
                    conn.sock.sendall(f"{head} BODY[] {{{len(message.data)}}}\r\n".encode()
                                      + message.data + b")\r\n")
                else:
                    conn.send(head + ")")

"""Shared fixtures: one database fixture parametrized over SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller

from mailbeacon.storage.db import Database
from mailbeacon.storage.migrate import migrate

POSTGRES_URL = os.environ.get(
    "MAILBEACON_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


REQUIRE_POSTGRES = _flag("CI") or _flag("MAILBEACON_REQUIRE_POSTGRES")


def _postgres_schema_url() -> Iterator[str]:
    """A URL whose connections live in a fresh schema, dropped afterwards."""
    admin = sa.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 5})
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL at {POSTGRES_URL} is required in CI but unreachable: {exc}")
        pytest.skip(f"PostgreSQL at {POSTGRES_URL} unreachable (set CI=1 to fail instead)")
    schema = "t_" + secrets.token_hex(6)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database URL of each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'mailbeacon.db'}"
    else:
        yield from _postgres_schema_url()


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """A migrated database of each backend."""
    database = Database(database_url)
    migrate(database)
    yield database
    database.dispose()


# --- a real upstream SMTP relay on loopback (aiosmtpd) ---------------------------------




def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        msg = message_from_bytes(self.data, _class=EmailMessage, policy=default_policy)
        assert isinstance(msg, EmailMessage)
        return msg

    def part(self, content_type: str) -> str:
        for part in self.message.walk():
            if part.get_content_type() == content_type:
                assert isinstance(part, EmailMessage)
                return str(part.get_content())
        raise AssertionError(f"no {content_type} part")


@dataclass
class SmtpRelay:
    """Records what it receives; `reply` decides the answer to RCPT per recipient."""

    port: int
    received: list[Received] = field(default_factory=list)
    reply: Callable[[str], str | None] = lambda rcpt: None  # None: accept

    @property
    def url(self) -> str:
        return f"smtp+plain://127.0.0.1:{self.port}"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        answer = self.reply(address)
        if answer:
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                       bytes(envelope.content)))
        return "250 2.0.0 Ok: queued as TEST"

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.received) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"relay got {len(self.received)} messages, wanted {count}")
            await asyncio.sleep(0.02)
        return self.received


@pytest.fixture
def smtp_relay() -> Iterator[SmtpRelay]:
    relay = SmtpRelay(free_port())
    controller = Controller(relay, hostname="127.0.0.1", port=relay.port)
    controller.start()
    yield relay
    controller.stop()


# --- an in-process mailbeacon on each backend ----------------------------------------

API_KEY = "key-test-0123456789"


@dataclass
class Service:
    """A running mailbeacon (recorder and worker started), an in-process HTTP client for
    its API, and, from the first hit on (or `start_http`), its real HTTP server (the
    tracking front and uvicorn) on loopback: started lazily, because stopping uvicorn
    costs ~0.2 s and most tests never make a hit."""

    runtime: Any
    client: Any  # httpx.AsyncClient with the API key, in process (ASGI)
    app: Any = None  # the MailbeaconApp both serve
    base_url: str = ""  # the real server, http://127.0.0.1:<port>
    web: Any = None  # httpx.AsyncClient on base_url, no auth
    http: Any = None  # the uvicorn.Server
    _task: Any = None

    @property
    def port(self) -> int:
        assert self.http is not None, "call start_http() first"
        return int(self.http.config.port)

    async def start_http(self) -> None:
        import httpx

        if self.http is None:
            self.http, self._task = await start_server(self.app)
            self.base_url = f"http://127.0.0.1:{self.http.config.port}"
            # Hits may wait for a database that is away (SQLite's busy timeout is 10 s);
            # no proxy from the environment between the test and the server.
            self.web = httpx.AsyncClient(base_url=self.base_url, follow_redirects=False,
                                         timeout=60, trust_env=False)

    async def stop_http(self) -> None:
        """uvicorn's graceful shutdown, if the server was started."""
        if self.http is not None:
            await self.web.aclose()
            self.http.should_exit = True
            await asyncio.wait_for(self._task, 30)

    async def add_domain(self, name: str = "example.com", **fields: str) -> None:
        r = await self.client.post("/v3/domains", data={"name": name, **fields})
        assert r.status_code == 200, r.text

    async def send(self, domain: str = "example.com", files: Any = None,
                   **fields: Any) -> str:
        data = {k.replace("__", ":").replace("_", "-") if k.startswith(("o__", "h__", "v__"))
                else k: v for k, v in fields.items()}
        data.setdefault("from", "Sender <sender@example.com>")
        r = await self.client.post(f"/v3/{domain}/messages", data=data, files=files)
        assert r.status_code == 200, r.text
        return str(r.json()["id"])

    async def events(self, domain: str = "example.com", **params: Any) -> list[dict[str, Any]]:
        r = await self.client.get(f"/v3/{domain}/events", params={"limit": 300, **params})
        assert r.status_code == 200, r.text
        return list(r.json()["items"])

    async def wait_events(self, count: int, domain: str = "example.com",
                          **params: Any) -> list[dict[str, Any]]:
        """The events once there are at least `count` of them (the worker is async)."""
        for _ in range(500):
            events = await self.events(domain, **params)
            if len(events) >= count:
                return events
            await asyncio.sleep(0.02)
        raise AssertionError(f"wanted {count} events {params}, got {events}")

    async def hit(self, url: str, method: str = "GET", **kwargs: Any) -> Any:
        """Follow a tracking URL (from a message, or a bare path) over a real socket to
        the server, so the tracking front answers it."""
        await self.start_http()
        return await self.web.request(method, target(url), **kwargs)


def target(url: str) -> str:
    """The path and query of `url`, as given (a full URL or a bare path)."""
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


async def start_server(app: Any, **options: Any) -> tuple[Any, asyncio.Task[None]]:
    """`app` behind a real uvicorn server with the tracking front (mailbeacon.server), on
    a free loopback port, running as a task; returned once it listens."""
    from mailbeacon.server import listening_socket, server

    options.setdefault("lifespan", "off")
    options.setdefault("log_config", None)
    # Bound here, on port 0: a port picked first and bound later can be taken meanwhile
    # (by another test's client connection) when many tests run at once.
    sock = listening_socket("127.0.0.1", 0, shared=False)
    http = server(app, "127.0.0.1", sock.getsockname()[1], **options)
    task = asyncio.create_task(http.serve(sockets=[sock]))
    for _ in range(500):
        if http.started or task.done():
            break
        await asyncio.sleep(0.01)
    if task.done():
        task.result()
    assert http.started, "the HTTP server did not start"
    return http, task


@contextlib.asynccontextmanager
async def serving(app: Any, **options: Any) -> AsyncIterator[Any]:
    """`start_server`, and uvicorn's graceful shutdown on the way out."""
    http, task = await start_server(app, **options)
    try:
        yield http
    finally:
        http.should_exit = True
        await asyncio.wait_for(task, 30)


@pytest.fixture
def service_factory(database_url: str, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    import httpx

    from mailbeacon.app import MailbeaconApp
    from mailbeacon.runtime import Runtime
    from mailbeacon.settings import Settings

    @contextlib.asynccontextmanager
    async def make(**settings: Any) -> AsyncIterator[Service]:
        settings.setdefault("api_key", API_KEY)
        settings.setdefault("spool_dir", str(tmp_path / "spool"))
        settings.setdefault("database_url", database_url)
        run_worker = settings.pop("run_worker", True)  # False: tests drive workers by hand
        runtime = Runtime(Settings(**settings), run_worker=run_worker)
        await runtime.start()
        app = MailbeaconApp(runtime)
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://testserver",
                                         auth=("api", API_KEY)) as client:
                service = Service(runtime, client, app)
                try:
                    yield service
                finally:
                    await service.stop_http()
        finally:
            await runtime.stop()

    yield make


@pytest.fixture
async def service(service_factory: Callable[..., Any],
                  smtp_relay: SmtpRelay) -> AsyncIterator[Service]:
    """mailbeacon relaying to `smtp_relay`, with the domain example.com."""
    async with service_factory(relay=smtp_relay.url) as svc:
        await svc.add_domain("example.com")
        yield svc


# --- the shared corpus -----------------------------------------------------------------


def shared_folder() -> Path:
    """../shared (or MAILBEACON_SHARED): skipped with a reason where absent, failed in CI."""
    folder = Path(os.environ.get("MAILBEACON_SHARED",
                                 Path(__file__).resolve().parent.parent.parent / "shared"))
    if not (folder / "corpora").is_dir():
        if REQUIRE_POSTGRES:  # CI=1: the shared corpus must be there
            pytest.fail(f"the shared folder with corpora/ is missing at {folder}")
        pytest.skip(f"the shared folder with corpora/ is absent at {folder}")
    return folder


def corpus_file(name: str) -> bytes:
    return (shared_folder() / "corpora" / "bounces" / "sisimai" / name).read_bytes()

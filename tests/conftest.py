"""Shared fixtures: one database fixture parametrized over SQLite and PostgreSQL, an SMTP
relay, an in-process mailbeacon. The helpers behind them live in tests/support/; the names
tests import from here are re-exported."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailbeacon.storage.db import Database
from mailbeacon.storage.migrate import migrate
from tests.support import (
    API_KEY,
    POSTGRES_URL,
    REQUIRE_POSTGRES,
    Received,
    Service,
    SmtpRelay,
    corpus_file,
    free_port,
    running_relay,
    serving,
    shared_folder,
    start_server,
    target,
)
from tests.support.databases import Postgres, SqliteTemplate

__all__ = [
    "API_KEY", "POSTGRES_URL", "REQUIRE_POSTGRES", "Received", "Service", "SmtpRelay",
    "corpus_file", "free_port", "serving", "shared_folder", "start_server", "target",
]

# --- databases: migrated once per run (and worker), see tests/support/databases.py -------

_MIGRATED = pytest.StashKey[bool]()
# Fixtures that want the database migrated: `database_url` then gives a migrated copy
# (the same database `db` opens), else an empty one.
_MIGRATED_FOR = ("db", "service_factory")


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> SqliteTemplate:
    return SqliteTemplate(tmp_path_factory.mktemp("template"))


@pytest.fixture(scope="session")
def _postgres() -> Iterator[Postgres]:
    server = Postgres()
    yield server
    server.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path,
                 _sqlite_template: SqliteTemplate, _postgres: Postgres) -> Iterator[str]:
    """A database URL of each backend: an empty database, or, for a test that also uses
    `db` (or `service_factory`), that migrated database."""
    migrated = any(name in request.fixturenames for name in _MIGRATED_FOR)
    request.node.stash[_MIGRATED] = migrated
    if request.param == "sqlite":
        path = tmp_path / "mailbeacon.db"
        if migrated:
            _sqlite_template.copy_to(path)
        yield f"sqlite:///{path}"
    elif migrated:
        yield _postgres.migrated_schema()
    else:
        yield from _postgres.empty_schema()


@pytest.fixture
def db(request: pytest.FixtureRequest, database_url: str) -> Iterator[Database]:
    """A migrated database of each backend."""
    database = Database(database_url)
    if not request.node.stash.get(_MIGRATED, False):  # `db` asked for late, by name
        migrate(database)
    yield database
    database.dispose()


# --- a real upstream SMTP relay on loopback (aiosmtpd) ---------------------------------


@pytest.fixture
def smtp_relay() -> Iterator[SmtpRelay]:
    with running_relay() as relay:
        yield relay


# --- an in-process mailbeacon on each backend ----------------------------------------


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


@pytest.fixture
async def smtp_service(service_factory: Callable[..., Any],
                       smtp_relay: SmtpRelay) -> AsyncIterator[tuple[Service, int]]:
    """mailbeacon relaying to `smtp_relay`, with its SMTP server on a port of its own and
    the domains example.com and other.example: (service, SMTP port)."""
    port = free_port()
    async with service_factory(relay=smtp_relay.url, smtp=f"127.0.0.1:{port}") as svc:
        await svc.add_domain("example.com")
        await svc.add_domain("other.example")
        yield svc, port

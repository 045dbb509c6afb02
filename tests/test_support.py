"""The test helpers themselves: the service's HTTP server starts once, the databases the
fixtures give are migrated or empty as promised, and emptied between tests."""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import mailbeacon.server
from mailbeacon.storage.db import Database
from mailbeacon.storage.schema import domains
from tests.support import Service, free_port, ports
from tests.support.databases import Postgres, snapshot


async def test_concurrent_hits_start_one_server(service: Service,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Hits gathered at once, before the server runs, start it once (not once per hit,
    leaving all servers but the last running)."""
    started: list[Any] = []
    make_server = mailbeacon.server.server

    def counted(*args: Any, **kwargs: Any) -> Any:
        started.append(make_server(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(mailbeacon.server, "server", counted)
    answers = await asyncio.gather(*[service.hit("/no-such-page") for _ in range(20)])
    assert {answer.status_code for answer in answers} == {401}  # no API key
    assert len(started) == 1
    assert started[0] is service.http


def _tables(url: str) -> set[str]:
    database = Database(url)
    try:
        with database.read() as conn:
            return set(sa.inspect(conn).get_table_names())
    finally:
        database.dispose()


def test_database_url_alone_is_empty(database_url: str) -> None:
    assert _tables(database_url) == set()


def test_db_is_migrated_and_database_url_is_it(db: Database, database_url: str) -> None:
    assert db.url == database_url
    assert {"alembic_version", "domains", "events", "messages"} <= _tables(database_url)


@pytest.mark.parametrize("turn", [1, 2])
def test_each_test_gets_its_database_empty(db: Database, turn: int) -> None:
    """Two tests in turn on the same worker's database: neither sees the other's row."""
    with db.write() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(domains)).scalar_one() == 0
        conn.execute(domains.insert().values(name="example.com", id="d" * 26, created_at=1))


def test_free_ports_are_the_workers_own() -> None:
    """Not ephemeral ports (any client connection may take one), and never another
    worker's: a port picked is still free when the server binds it."""
    ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    blocks = [ports.block(f"gw{n}") for n in range(20)]
    assert max(block.stop for block in blocks) <= ephemeral
    for first, second in itertools.combinations(blocks, 2):
        assert not set(first) & set(second)
    mine = ports.block(os.environ.get("PYTEST_XDIST_WORKER", ""))
    picked = [free_port() for _ in range(3)]
    assert all(port in mine and ports.bindable(port) for port in picked)
    assert len(set(picked)) == 3


def test_postgres_schema_goes_back_to_its_migrated_state() -> None:
    """Between tests the worker's schema loses what a test wrote, keeps what the migration
    seeded, and its sequences start again where the migration left them."""
    server = Postgres()
    admin = server.admin()
    schema = f"t_snapshot_{secrets.token_hex(4)}"
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
            conn.execute(sa.text(f"CREATE TABLE {schema}.parent (id serial PRIMARY KEY, "
                                 "name text)"))
            conn.execute(sa.text(f"CREATE TABLE {schema}.child (parent int REFERENCES "
                                 f"{schema}.parent)"))
            conn.execute(sa.text(f"INSERT INTO {schema}.parent (name) VALUES ('seeded')"))
        back = snapshot(admin, schema)
        for _ in range(2):  # a test writes; the next one finds the migrated state
            with admin.begin() as conn:
                conn.execute(sa.text(f"INSERT INTO {schema}.parent (name) VALUES ('test')"))
                conn.execute(sa.text(f"INSERT INTO {schema}.child VALUES (1), (2)"))
            with admin.begin() as conn:
                conn.execute(sa.text(back))
            with admin.begin() as conn:
                assert conn.execute(sa.text(f"SELECT id, name FROM {schema}.parent")).all() \
                    == [(1, "seeded")]
                assert conn.execute(sa.text(f"SELECT * FROM {schema}.child")).all() == []
                assert conn.execute(sa.text(f"SELECT nextval('{schema}.parent_id_seq')"
                                            )).scalar() == 2
                conn.execute(sa.text(back))
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
            conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema}_seed CASCADE"))
        server.close()

"""API keys: scope and role, revocation seen by every process within the cache bound,
last use written at most once a minute, and the `keys` commands."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import event, select

from mailbeacon.cli import main
from mailbeacon.domains.apikeys import FULL_ACCESS, Grant, KeyChecker, Role, create_key, list_keys
from mailbeacon.domains.domain import add_domain
from mailbeacon.errors import BadRequest, NotFound
from mailbeacon.storage.db import Database
from mailbeacon.storage.schema import api_keys


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def second(database_url: str, db: Database) -> Iterator[Database]:
    """Another handle on the same database, as another process would have."""
    other = Database(database_url)
    yield other
    other.dispose()


def test_a_key_carries_its_scope_and_role(db: Database) -> None:
    add_domain(db, "example.com")
    everywhere = create_key(db, "ops")
    shop = create_key(db, "shop", domain="Example.COM", role=Role.SEND)
    keys = KeyChecker(db, configured_key="key-configured-0123456789")
    ops_grant = keys.check(everywhere)
    assert ops_grant is not None
    assert (ops_grant.domain, ops_grant.role) == (None, Role.FULL)
    shop_grant = keys.check(shop)
    assert shop_grant is not None
    assert (shop_grant.domain, shop_grant.role) == ("example.com", Role.SEND)
    assert shop_grant.may_use("EXAMPLE.com.") and not shop_grant.may_use("other.example")
    assert not shop_grant.may_use("not a domain")
    assert shop_grant.may(Role.SEND) and not shop_grant.may(Role.FULL)
    # MAILBEACON_API_KEY stays a full key for every domain.
    assert keys.check("key-configured-0123456789") == FULL_ACCESS
    assert keys.check("") is None and keys.check(shop + "x") is None
    listed = list_keys(db)
    assert [(k.description, k.scope, k.role) for k in listed] == [
        ("ops", "all domains", Role.FULL), ("shop", "example.com", Role.SEND)]
    assert listed[1].prefix == shop[:12] and shop not in repr(listed)
    # Only the hash and a prefix are stored.
    with db.read() as conn:
        stored = conn.execute(select(api_keys)).all()
    assert not any(shop in str(tuple(row)) for row in stored)


def test_bad_key_requests(db: Database) -> None:
    with pytest.raises(NotFound, match="nope.example"):
        create_key(db, domain="nope.example")
    with pytest.raises(BadRequest, match="not a valid domain"):
        create_key(db, domain="not a domain")
    with pytest.raises(BadRequest, match="one line"):
        create_key(db, "two\nlines")
    with pytest.raises(NotFound, match="No API key"):
        KeyChecker(db).revoke("00000000000000000000000000")


def test_a_revoked_key_is_refused_by_another_process_within_the_bound(
        db: Database, second: Database) -> None:
    key = create_key(db, "app")
    clock = Clock()
    here, there = KeyChecker(db, clock=clock), KeyChecker(second, clock=clock)
    assert there.check(key) is not None  # cached there from now on
    key_id = list_keys(db)[0].id
    here.revoke(key_id)
    assert here.check(key) is None  # at once in the revoking process
    clock.now += KeyChecker.CACHE_SECONDS - 0.5
    assert there.check(key) is not None  # still cached: at most the bound
    clock.now += 0.5
    assert there.check(key) is None  # the bound has passed: refused
    assert KeyChecker.CACHE_SECONDS <= 5
    assert list_keys(db) == [] and list_keys(db, revoked=True)[0].revoked_at is not None


def _count_updates(db: Database) -> Callable[[], int]:
    seen: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE API_KEYS"):
            seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", before)
    return lambda: len(seen)


def test_last_use_is_written_at_most_once_a_minute_per_key(db: Database) -> None:
    first, other = create_key(db, "one"), create_key(db, "two")
    clock = Clock()
    keys = KeyChecker(db, clock=clock)
    updates = _count_updates(db)
    for _ in range(200):
        assert keys.check(first) is not None
        clock.now += 0.1  # 20 s in all: the cache is refreshed, last use is not rewritten
    assert updates() == 1
    assert keys.check(other) is not None
    assert updates() == 2  # per key
    used = {k.description: k.last_used_at for k in list_keys(db)}
    assert used["one"] is not None and used["two"] is not None
    clock.now += KeyChecker.TOUCH_SECONDS
    keys.check(first)
    assert updates() == 3


async def test_two_app_instances_on_one_database(service_factory: Callable[..., Any]) -> None:
    """A key revoked through one running mailbeacon is refused by another on the same
    database once the cache bound has passed (the clock moved, not slept)."""
    async with service_factory() as one, service_factory() as two:
        await one.add_domain("example.com")
        key = create_key(one.runtime.db, "app", domain="example.com")
        clock = Clock()
        two.runtime.keys.clock = clock
        r = await two.client.get("/v3/example.com/events", auth=("api", key))
        assert r.status_code == 200
        one.runtime.keys.revoke(list_keys(one.runtime.db)[0].id)
        r = await one.client.get("/v3/example.com/events", auth=("api", key))
        assert r.status_code == 401
        clock.now += KeyChecker.CACHE_SECONDS
        r = await two.client.get("/v3/example.com/events", auth=("api", key))
        assert r.status_code == 401 and r.json() == {"message": "Invalid private key"}


def test_keys_commands(database_url: str) -> None:
    runner = CliRunner()
    env = {"MAILBEACON_DATABASE_URL": database_url}

    def run(*args: str) -> Any:
        return runner.invoke(main, ["keys", *args], env=env)

    assert runner.invoke(main, ["domains", "add", "example.com"], env=env).exit_code == 0
    result = run("create", "--description", "shop app", "--domain", "example.com",
                 "--role", "send")
    assert result.exit_code == 0, result.output
    shop = result.output.strip()
    assert shop.startswith("key-") and "\n" not in shop
    everywhere = run("create").output.strip()
    for args, words in ((["--domain", "nope.example"], "Domain not found"),
                        (["--role", "admin"], "'admin' is not one of"),
                        (["--domain", "not a domain"], "not a valid domain")):
        result = run("create", *args)
        assert result.exit_code != 0 and words in result.output, result.output
        assert "Traceback" not in result.output
    result = run("list")
    lines = result.output.splitlines()
    assert lines[0].split("\t") == ["id", "prefix", "scope", "role", "created", "last used",
                                    "description"]
    rows = [line.split("\t") for line in lines[1:]]
    assert [(r[1], r[2], r[3], r[6]) for r in rows] == [
        (shop[:12], "example.com", "send", "shop app"),
        (everywhere[:12], "all domains", "full", "")]
    assert shop not in result.output and everywhere not in result.output
    db = Database(database_url)
    try:
        assert KeyChecker(db).check(shop) == Grant(rows[0][0], "example.com", Role.SEND)
        result = run("revoke", rows[0][0])
        assert result.exit_code == 0 and f"revoked {rows[0][0]}" in result.output
        assert KeyChecker(db).check(shop) is None
        assert KeyChecker(db).check(everywhere) is not None
    finally:
        db.dispose()
    result = run("revoke", "no-such-id")
    assert result.exit_code != 0 and "No API key with id 'no-such-id'" in result.output
    assert [line.split("\t")[1] for line in run("list").output.splitlines()[1:]] == [
        everywhere[:12]]
    listed = run("list", "--all").output.splitlines()
    assert "revoked" in listed[0] and len(listed) == 3

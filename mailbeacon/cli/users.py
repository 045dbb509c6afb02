"""`mailbeacon users ...`: dashboard users (create, list, password, delete).

    mailbeacon users create alice                      # asks for the password twice
    printf '%s\\n' "$PASSWORD" | mailbeacon users create alice --password-stdin
"""

from __future__ import annotations

import sys
from typing import Any

import click

from mailbeacon.dashboard import users as store
from mailbeacon.dashboard.sessions import SessionStore
from mailbeacon.dashboard.web import fmt_us
from mailbeacon.errors import MailbeaconError
from mailbeacon.settings import BY_NAME, load
from mailbeacon.storage.db import Database
from mailbeacon.storage.migrate import migrate

_DATABASE = BY_NAME["database_url"]


def _database_option(func: Any) -> Any:
    # The `--database-url` option of the other commands, declared from the same setting.
    return click.option(_DATABASE.option, _DATABASE.name, default=None,
                        help=f"{_DATABASE.help} (env {_DATABASE.env})")(func)


def _database(database_url: str | None) -> Database:
    try:
        db = Database(load({"database_url": database_url}).database_url)
        migrate(db)
    except MailbeaconError as exc:
        raise click.UsageError(str(exc)) from exc
    except Exception as exc:  # e.g. PostgreSQL unreachable: say which, no traceback
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        raise click.ClickException(
            f"cannot open the database: {type(exc).__name__}: {first_line}") from exc
    return db


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    value: str = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    return value


@click.group()
def users() -> None:
    """Dashboard users (log in at /dashboard)."""


@users.command(name="create")
@click.argument("username")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from the first line of standard input.")
@_database_option
def create(username: str, password_stdin: bool, database_url: str | None) -> None:
    """Make a dashboard user; asks for the password twice (or reads it from stdin)."""
    db = _database(database_url)
    try:
        store.check_username(username)
        user = store.create_user(db, username, _read_password(password_stdin))
    except MailbeaconError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        db.dispose()
    click.echo(f"created user {user.username}")


@users.command(name="list")
@_database_option
def list_command(database_url: str | None) -> None:
    """List dashboard users and when they last logged in."""
    db = _database(database_url)
    try:
        for user in store.list_users(db):
            click.echo(f"{user.username}\tcreated {fmt_us(user.created_at)}\t"
                       f"last login {fmt_us(user.last_login_at)}")
    finally:
        db.dispose()


@users.command(name="password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from the first line of standard input.")
@_database_option
def password(username: str, password_stdin: bool, database_url: str | None) -> None:
    """Set a user's password; their sessions end."""
    db = _database(database_url)
    try:
        user = store.get_user(db, username)
        store.set_password(db, username, _read_password(password_stdin))
        SessionStore(db).delete_user_sessions(user.id)
    except MailbeaconError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        db.dispose()
    click.echo(f"password of {username} changed; their sessions are logged out")


@users.command(name="delete")
@click.argument("username")
@_database_option
def delete(username: str, database_url: str | None) -> None:
    """Delete a user; their sessions end."""
    db = _database(database_url)
    try:
        user = store.delete_user(db, username)
        SessionStore(db).delete_user_sessions(user.id)
    except MailbeaconError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        db.dispose()
    click.echo(f"deleted user {username}")

"""`mailbeacon users ...`: dashboard users (create, list, password, delete).

    mailbeacon users create alice                      # asks for the password twice
    printf '%s\\n' "$PASSWORD" | mailbeacon users create alice --password-stdin
"""

from __future__ import annotations

import sys
from typing import Any

import click

from mailbeacon.cli.options import open_database, setting_options
from mailbeacon.dashboard import users as store
from mailbeacon.dashboard.sessions import SessionStore
from mailbeacon.errors import MailbeaconError
from mailbeacon.model.clock import shown


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
@setting_options(("database_url",))
def create(username: str, password_stdin: bool, **options: Any) -> None:
    """Make a dashboard user; asks for the password twice (or reads it from stdin)."""
    db = open_database(options)
    try:
        store.check_username(username)
        user = store.create_user(db, username, _read_password(password_stdin))
    except MailbeaconError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        db.dispose()
    click.echo(f"created user {user.username}")


@users.command(name="list")
@setting_options(("database_url",))
def list_command(**options: Any) -> None:
    """List dashboard users and when they last logged in."""
    db = open_database(options)
    try:
        for user in store.list_users(db):
            click.echo(f"{user.username}\tcreated {shown(user.created_at)}\t"
                       f"last login {shown(user.last_login_at)}")
    finally:
        db.dispose()


@users.command(name="password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from the first line of standard input.")
@setting_options(("database_url",))
def password(username: str, password_stdin: bool, **options: Any) -> None:
    """Set a user's password; their sessions end."""
    db = open_database(options)
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
@setting_options(("database_url",))
def delete(username: str, **options: Any) -> None:
    """Delete a user; their sessions end."""
    db = open_database(options)
    try:
        user = store.delete_user(db, username)
        SessionStore(db).delete_user_sessions(user.id)
    except MailbeaconError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        db.dispose()
    click.echo(f"deleted user {username}")

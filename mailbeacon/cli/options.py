"""What every command shares: options generated from the settings, opening the database."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from mailbeacon.errors import MailbeaconError
from mailbeacon.settings import SETTINGS, Settings, load
from mailbeacon.storage.db import Database
from mailbeacon.storage.migrate import migrate

F = Callable[..., Any]


def setting_options(names: tuple[str, ...] | None = None) -> Callable[[F], F]:
    """Click options for settings, generated from their one declaration."""

    def decorate(func: F) -> F:
        for s in reversed(SETTINGS):
            if names is not None and s.name not in names:
                continue
            shown = "" if s.secret or s.default == "" else f" [default: {s.default}]"
            if s.low is not None:
                shown += f" [range: {s.range}]"
            kind = str if s.type is bool else s.type  # yes/no, parsed by settings.load
            func = click.option(s.option, s.name, type=kind, default=None,
                                help=f"{s.help}{shown} (env {s.env})")(func)
        return func

    return decorate


def settings_from(options: dict[str, Any]) -> Settings:
    """The settings from command-line options and the environment, or a usage error."""
    try:
        return load(options)
    except MailbeaconError as exc:
        raise click.UsageError(str(exc)) from exc


def open_database(options: dict[str, Any]) -> Database:
    """The migrated database the options name, or a message saying why not."""
    settings = settings_from(options)
    try:
        db = Database(settings.database_url)
        migrate(db)
    except MailbeaconError as exc:
        raise click.UsageError(str(exc)) from exc
    except Exception as exc:  # e.g. PostgreSQL unreachable: say which, no traceback
        raise database_failure(exc) from exc
    return db


def database_failure(exc: Exception) -> click.ClickException:
    """An unreachable database as one line, no traceback."""
    first_line = str(exc).splitlines()[0] if str(exc) else ""
    return click.ClickException(f"cannot open the database: {type(exc).__name__}: {first_line}")

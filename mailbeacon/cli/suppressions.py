"""`mailbeacon suppressions import|export`: suppression lists as CSV files.

The CSV format is the Suppressions API's import format, so an export imports again
(into the same or another domain) and a Mailgun export imports too.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from mailbeacon.cli.options import open_database, setting_options
from mailbeacon.domains import domain as dom
from mailbeacon.errors import MailbeaconError
from mailbeacon.storage.db import Database
from mailbeacon.suppress import lists as sl
from mailbeacon.suppress.rules import SuppressionKind

_KINDS = ", ".join(sl.LISTS)


def _open(options: dict[str, Any], domain: str, kind: str) -> tuple[Database, str,
                                                                    SuppressionKind]:
    """The database, the domain's stored name and the list's kind, or a clear error."""
    if kind.lower() not in sl.LISTS:
        raise click.ClickException(f"unknown list {kind!r}: use one of {_KINDS}")
    db = open_database(options)
    try:
        name = dom.get_domain(db, domain).name
    except MailbeaconError as exc:
        db.dispose()
        raise click.ClickException(str(exc)) from exc
    return db, name, sl.LISTS[kind.lower()]


@click.group()
def suppressions() -> None:
    """Suppression lists (bounces, unsubscribes, complaints, whitelists) as CSV."""


@suppressions.command(name="import")
@setting_options(("database_url",))
@click.argument("domain")
@click.argument("kind", metavar="KIND")
@click.argument("file", metavar="FILE.csv", type=click.Path(path_type=Path))
def import_command(domain: str, kind: str, file: Path, **options: Any) -> None:
    """Add the addresses of a CSV file to a domain's list (KIND: bounces, unsubscribes,
    complaints or whitelists), all of them or, if any row is bad, none.

    The header row names the columns, in any order and case: address,code,error,created_at
    for bounces; address,tags,created_at (one tag, '*' or list:ID per row) for
    unsubscribes; address,created_at for complaints; address,domain,reason,created_at for
    whitelists. Other columns are ignored; created_at is an RFC 2822 date.
    """
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise click.ClickException(f"cannot read {file}: {exc.strerror or exc}") from exc
    db, name, found = _open(options, domain, kind)
    try:
        entries = sl.read_csv(found, data)  # no row limit: a local file, checked in full
        count = sl.add_entries(db, name, found, entries)
    except MailbeaconError as exc:
        raise click.ClickException(f"{file}: {exc}") from exc
    finally:
        db.dispose()
    noun = "address" if count == 1 else "addresses"
    click.echo(f"imported {count} {noun} into the {sl.NAMES[found]} of {name}")


@suppressions.command(name="export")
@setting_options(("database_url",))
@click.argument("domain")
@click.argument("kind", metavar="KIND")
@click.argument("file", metavar="[FILE.csv|-]", default="-",
                type=click.Path(allow_dash=True, path_type=Path))
def export_command(domain: str, kind: str, file: Path, **options: Any) -> None:
    """Write a domain's list (KIND: bounces, unsubscribes, complaints or whitelists) as
    CSV with a header row, to FILE.csv or standard output ('-', the default)."""
    db, name, found = _open(options, domain, kind)
    try:
        if str(file) == "-":
            count = sl.write_csv(found, sl.iter_entries(db, name, found), sys.stdout)
        else:
            try:
                with file.open("w", encoding="utf-8", newline="") as out:
                    count = sl.write_csv(found, sl.iter_entries(db, name, found), out)
            except OSError as exc:
                raise click.ClickException(f"cannot write {file}: {exc.strerror or exc}"
                                           ) from exc
    finally:
        db.dispose()
    noun = "address" if count == 1 else "addresses"
    # On stderr: the CSV may be going to stdout.
    click.echo(f"exported {count} {noun} from the {sl.NAMES[found]} of {name}", err=True)

"""`mailbeacon migrate` and `mailbeacon purge`: the database's schema and retention."""

from __future__ import annotations

from typing import Any

import click

from mailbeacon.cli.options import open_database, setting_options


@click.command(name="migrate")
@setting_options(("database_url",))
def migrate_command(**options: Any) -> None:
    """Create or upgrade the database schema."""
    open_database(options)
    click.echo("database is up to date")


@click.command(name="purge")
@setting_options(("database_url",))
def purge_command(**options: Any) -> None:
    """Delete raw events (and old inbound mail, finished webhook posts) past each
    domain's retention; stats are kept. `serve` also does this every hour."""
    from mailbeacon.insight.retention import purge

    removed = purge(open_database(options))
    click.echo(", ".join(f"{n} {table}" for table, n in removed.items()) + " deleted")

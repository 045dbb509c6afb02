"""`mailbeacon keys ...`: API keys (create, list, revoke)."""

from __future__ import annotations

from typing import Any

import click

from mailbeacon.cli.options import open_database, setting_options
from mailbeacon.domains.apikeys import Role, create_key, list_keys, revoke_key
from mailbeacon.errors import MailbeaconError
from mailbeacon.model.clock import shown


@click.group()
def keys() -> None:
    """API keys (HTTP basic auth, user 'api'; SMTP AUTH): create, list, revoke."""


@keys.command(name="create")
@click.option("--description", default="", help="A note saying what the key is for.")
@click.option("--domain", default=None,
              help="Limit the key to this domain (default: every domain).")
@click.option("--role", type=click.Choice([r.value for r in Role]), default=Role.FULL.value,
              show_default=True,
              help="full: every route of its domains; send: only sending messages.")
@setting_options(("database_url",))
def keys_create(description: str, domain: str | None, role: str, **options: Any) -> None:
    """Make a new API key and print it (it is shown only once)."""
    db = open_database(options)
    try:
        click.echo(create_key(db, description, domain=domain, role=Role(role)))
    except MailbeaconError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        db.dispose()


@keys.command(name="list")
@click.option("--all", "show_revoked", is_flag=True, help="Include revoked keys.")
@setting_options(("database_url",))
def keys_list(show_revoked: bool, **options: Any) -> None:
    """List API keys (never the keys themselves): id, prefix, scope, role, created,
    last used, description. MAILBEACON_API_KEY is not listed: it is a setting."""
    db = open_database(options)
    try:
        found = list_keys(db, revoked=show_revoked)
    finally:
        db.dispose()
    columns = ["id", "prefix", "scope", "role", "created", "last used", "description"]
    if show_revoked:
        columns.insert(-1, "revoked")
    click.echo("\t".join(columns))
    for key in found:
        row = [key.id, key.prefix or "—", key.scope, key.role.value, shown(key.created_at),
               shown(key.last_used_at), key.description]
        if show_revoked:
            row.insert(-1, shown(key.revoked_at))
        click.echo("\t".join(row))


@keys.command(name="revoke")
@click.argument("key_id", metavar="ID")
@setting_options(("database_url",))
def keys_revoke(key_id: str, **options: Any) -> None:
    """Revoke a key (ID from `keys list`); every server refuses it within seconds."""
    db = open_database(options)
    try:
        key = revoke_key(db, key_id.strip())
    except MailbeaconError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        db.dispose()
    click.echo(f"revoked {key.id} ({key.prefix or 'no prefix'}, {key.scope}, {key.role}) "
               f"at {shown(key.revoked_at)}")

"""`mailbeacon webhooks ...`: signing keys and replaying failed deliveries."""

from __future__ import annotations

from typing import Any

import click

from mailbeacon.cli.options import open_database, setting_options
from mailbeacon.domains import domain as dom
from mailbeacon.errors import MailbeaconError
from mailbeacon.webhooks import deliveries as webhook_deliveries
from mailbeacon.webhooks import store as webhook_store


@click.group()
def webhooks() -> None:
    """Webhook signing keys and the delivery log."""


@webhooks.command(name="signing-key")
@click.argument("domain")
@click.option("--rotate", is_flag=True, help="Make a new key; the old one stops working.")
@setting_options(("database_url",))
def webhooks_signing_key(domain: str, rotate: bool, **options: Any) -> None:
    """Print the key that signs DOMAIN's webhooks."""
    db = open_database(options)
    try:
        click.echo(webhook_store.signing_key(db, dom.get_domain(db, domain).name, rotate))
    except MailbeaconError as exc:
        raise click.ClickException(str(exc)) from exc


@webhooks.command(name="replay")
@click.argument("domain")
@click.option("--id", "delivery_id", default=None, help="One delivery (any finished one).")
@setting_options(("database_url",))
def webhooks_replay(domain: str, delivery_id: str | None, **options: Any) -> None:
    """Send DOMAIN's failed webhook deliveries (or one named delivery) again."""
    db = open_database(options)
    try:
        count = webhook_deliveries.replay(db, dom.get_domain(db, domain).name, delivery_id)
    except MailbeaconError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{count} deliveries will be sent again by the running server")

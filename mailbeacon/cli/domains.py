"""`mailbeacon domains ...`: sending domains and their DKIM keys."""

from __future__ import annotations

from typing import Any

import click

from mailbeacon.cli.options import open_database, setting_options
from mailbeacon.domains import domain as dom
from mailbeacon.errors import MailbeaconError
from mailbeacon.send import dkim


@click.group()
def domains() -> None:
    """Sending domains."""


@domains.command(name="add")
@click.argument("name")
@click.option("--tracking-url", default=None,
              help="Base URL of tracking links, e.g. https://email.example.com.")
@click.option("--bounce-domain", default=None,
              help="Domain of VERP return addresses (MX to mailbeacon); default: NAME.")
@setting_options(("database_url",))
def domains_add(name: str, tracking_url: str | None, bounce_domain: str | None,
                **options: Any) -> None:
    """Add a sending domain."""
    db = open_database(options)
    try:
        domain = dom.add_domain(db, name, tracking_url)
        if bounce_domain:
            domain = dom.update_domain(db, domain.name,
                                       bounce_domain=dom.normalize_name(bounce_domain))
    except MailbeaconError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"added {domain.name}")


@domains.command(name="dkim")
@click.argument("name")
@click.option("--selector", default="mb1", show_default=True, help="DKIM selector (a DNS label).")
@click.option("--bits", default=2048, show_default=True, type=int, help="RSA key size.")
@setting_options(("database_url",))
def domains_dkim(name: str, selector: str, bits: int, **options: Any) -> None:
    """Make a DKIM key for a domain and print the DNS TXT record to publish.

    From then on every message of the domain is signed. Running it again replaces the
    key: publish the new record (under the new selector, best) before sending more.
    """
    db = open_database(options)
    try:
        domain = dom.get_domain(db, name)
        key = dkim.generate_key(selector, bits)
        dom.update_domain(db, domain.name, dkim_selector=key.selector,
                          dkim_private_key=key.private_pem)
    except MailbeaconError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"Publish this TXT record, then mail from {domain.name} is DKIM-signed:\n")
    click.echo(f"{dkim.dns_name(domain.name, key.selector)}. IN TXT "
               f"{dkim.txt_strings(dkim.dns_record(key))}")


@domains.command(name="list")
@setting_options(("database_url",))
def domains_list(**options: Any) -> None:
    """List sending domains and their tracking settings."""
    _, items = dom.list_domains(open_database(options), limit=1000)
    for d in items:
        click.echo(f"{d.name}\topens={'yes' if d.track_opens else 'no'}\t"
                   f"clicks={d.track_clicks}\ttracking_url={d.tracking_url or '-'}")

"""The `mailbeacon` command: serve, migrate, keys, domains."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from mailbeacon.cli.bounces import bounces
from mailbeacon.cli.suppressions import suppressions
from mailbeacon.cli.users import users
from mailbeacon.dashboard.web import fmt_us
from mailbeacon.domains import domain as dom
from mailbeacon.domains.apikeys import Role, create_key, list_keys, revoke_key
from mailbeacon.errors import MailbeaconError
from mailbeacon.send import dkim
from mailbeacon.settings import SETTINGS, Settings, load
from mailbeacon.storage.db import Database
from mailbeacon.storage.migrate import migrate
from mailbeacon.webhooks import deliveries as webhook_deliveries
from mailbeacon.webhooks import store as webhook_store

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


def _settings(options: dict[str, Any]) -> Settings:
    try:
        return load(options)
    except MailbeaconError as exc:
        raise click.UsageError(str(exc)) from exc


def _database(options: dict[str, Any]) -> Database:
    settings = _settings(options)
    try:
        db = Database(settings.database_url)
        migrate(db)
    except MailbeaconError as exc:
        raise click.UsageError(str(exc)) from exc
    except Exception as exc:  # e.g. PostgreSQL unreachable: say which, no traceback
        raise _database_failure(exc) from exc
    return db


def _database_failure(exc: Exception) -> click.ClickException:
    first_line = str(exc).splitlines()[0] if str(exc) else ""
    return click.ClickException(f"cannot open the database: {type(exc).__name__}: {first_line}")


@click.group()
@click.version_option(package_name="mailbeacon")
def main() -> None:
    """mailbeacon: self-hosted email sending and tracking with a Mailgun-shaped API."""


@main.command()
@setting_options()
def serve(**options: Any) -> None:
    """Run the HTTP server (API and tracking endpoints) and the delivery worker."""
    settings = _settings(options)
    _run_http(settings)


@main.command(name="http-process", hidden=True)
@click.option("--parent", type=int, required=True, help="The pid of its serve.")
def http_process(parent: int) -> None:
    """One of the further HTTP processes serve starts (--http-processes); settings come
    from the environment, and it stops once its serve is gone."""
    _run_http(_settings({}), parent=parent)


def _run_http(settings: Settings, parent: int | None = None) -> None:
    """serve (`parent` None), or one of its further HTTP processes."""
    from mailbeacon.app import MailbeaconApp
    from mailbeacon.runtime import Runtime
    from mailbeacon.server import listening_socket, server

    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # aiosmtpd logs every client line at debug level, AUTH credentials included.
    logging.getLogger("mail.log").setLevel(max(logging.INFO, logging.root.level))
    host, port = settings.http_host_port
    try:
        sock = listening_socket(host, port, shared=settings.http_processes > 1)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from exc
    try:
        runtime = Runtime(settings, serve_pid=parent)
    except MailbeaconError as exc:
        raise click.UsageError(str(exc)) from exc
    except Exception as exc:  # e.g. PostgreSQL unreachable: say which, no traceback
        raise _database_failure(exc) from exc
    if parent is None:
        click.echo(f"mailbeacon listening on http://{host}:{port} "
                   f"({settings.http_processes} HTTP process(es); tracking links: "
                   f"{settings.base_url}; relay: {runtime.relay!r})", err=True)
    http = server(MailbeaconApp(runtime), host, port, lifespan="on")
    with contextlib.suppress(KeyboardInterrupt):
        http.run(sockets=[sock])
    if not http.started:  # uvicorn has said why
        sys.exit(3)


@main.command(name="migrate")
@setting_options(("database_url",))
def migrate_command(**options: Any) -> None:
    """Create or upgrade the database schema."""
    _database(options)
    click.echo("database is up to date")


@main.command(name="load-journal")
@setting_options(("database_url", "spool_dir", "geoip_db", "engagement_half_life_days"))
@click.option("--parent", type=int, default=None, hidden=True,
              help="Stop once process PARENT is no longer this one's parent (serve's).")
def load_journal(parent: int | None, **options: Any) -> None:
    """Load journaled hits into the database, continuously (serve starts this itself
    when MAILBEACON_RECORDING=journal)."""
    import signal
    import time
    from pathlib import Path

    from mailbeacon.track.enrich import GeoLookup
    from mailbeacon.track.hits import HitWriter
    from mailbeacon.track.spool import Spool

    settings = _settings(options)
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.nice(10)  # answering hits comes first; the journal waits safely on disk meanwhile
    db = _database(options)
    writer = HitWriter(GeoLookup(settings.geoip_db or None), settings.engagement_half_life_days)
    spool = Spool(Path(settings.spool_dir))
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping and parent in (None, os.getppid()):
        try:
            spool.report_lag()
            if spool.pending() and spool.replay(writer.store, db.write):
                continue
        except Exception as exc:  # the database is away: the journal waits on disk
            logging.getLogger("mailbeacon.spool").warning("journal not loaded yet: %s", exc)
            time.sleep(2.0)
        time.sleep(0.02)


@main.command(name="purge")
@setting_options(("database_url",))
def purge_command(**options: Any) -> None:
    """Delete raw events (and old inbound mail, finished webhook posts) past each
    domain's retention; stats are kept. `serve` also does this every hour."""
    from mailbeacon.insight.retention import purge

    removed = purge(_database(options))
    click.echo(", ".join(f"{n} {table}" for table, n in removed.items()) + " deleted")


@main.group()
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
    db = _database(options)
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
    db = _database(options)
    try:
        found = list_keys(db, revoked=show_revoked)
    finally:
        db.dispose()
    columns = ["id", "prefix", "scope", "role", "created", "last used", "description"]
    if show_revoked:
        columns.insert(-1, "revoked")
    click.echo("\t".join(columns))
    for key in found:
        row = [key.id, key.prefix or "—", key.scope, key.role.value, fmt_us(key.created_at),
               fmt_us(key.last_used_at), key.description]
        if show_revoked:
            row.insert(-1, fmt_us(key.revoked_at))
        click.echo("\t".join(row))


@keys.command(name="revoke")
@click.argument("key_id", metavar="ID")
@setting_options(("database_url",))
def keys_revoke(key_id: str, **options: Any) -> None:
    """Revoke a key (ID from `keys list`); every server refuses it within seconds."""
    db = _database(options)
    try:
        key = revoke_key(db, key_id.strip())
    except MailbeaconError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        db.dispose()
    click.echo(f"revoked {key.id} ({key.prefix or 'no prefix'}, {key.scope}, {key.role}) "
               f"at {fmt_us(key.revoked_at)}")


@main.group()
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
    db = _database(options)
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
    db = _database(options)
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
    _, items = dom.list_domains(_database(options), limit=1000)
    for d in items:
        click.echo(f"{d.name}\topens={'yes' if d.track_opens else 'no'}\t"
                   f"clicks={d.track_clicks}\ttracking_url={d.tracking_url or '-'}")


@main.group()
def webhooks() -> None:
    """Webhook signing keys and the delivery log."""


@webhooks.command(name="signing-key")
@click.argument("domain")
@click.option("--rotate", is_flag=True, help="Make a new key; the old one stops working.")
@setting_options(("database_url",))
def webhooks_signing_key(domain: str, rotate: bool, **options: Any) -> None:
    """Print the key that signs DOMAIN's webhooks."""
    db = _database(options)
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
    db = _database(options)
    try:
        count = webhook_deliveries.replay(db, dom.get_domain(db, domain).name, delivery_id)
    except MailbeaconError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{count} deliveries will be sent again by the running server")


main.add_command(suppressions)
main.add_command(bounces)
main.add_command(users)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The `mailbeacon` command: one module per command family (serve, database, keys, domains,
webhooks, suppressions, bounces, users), options shared through cli/options.py."""

from __future__ import annotations

import sys

import click

from mailbeacon.cli.bounces import bounces
from mailbeacon.cli.database import migrate_command, purge_command
from mailbeacon.cli.domains import domains
from mailbeacon.cli.keys import keys
from mailbeacon.cli.serve import http_process, load_journal, serve
from mailbeacon.cli.suppressions import suppressions
from mailbeacon.cli.users import users
from mailbeacon.cli.webhooks import webhooks


@click.group()
@click.version_option(package_name="mailbeacon")
def main() -> None:
    """mailbeacon: self-hosted email sending and tracking with a Mailgun-shaped API."""


for command in (serve, http_process, load_journal, migrate_command, purge_command, keys,
                domains, webhooks, suppressions, bounces, users):
    main.add_command(command)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

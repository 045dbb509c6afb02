"""The `bounces` command group: parse bounce, complaint and auto-reply files offline.

Touches no database: it is for checking what the parser makes of a message, e.g.

    mailbeacon bounces parse failed.eml complaint.eml
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from mailbeacon.inbound.parser import parse


@click.group()
def bounces() -> None:
    """Inspect bounces, complaints and auto-replies."""


@bounces.command("parse")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.pass_context
def parse_files(ctx: click.Context, files: tuple[Path, ...]) -> None:
    """Print one JSON line per result found in each FILE (raw RFC 5322 messages).

    A file that cannot be read is reported on stderr; the others are still parsed and the
    exit status is 1.
    """
    unreadable = 0
    for path in files:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            unreadable += 1
            click.echo(f"error: cannot read {path}: {exc.strerror or exc}", err=True)
            continue
        for result in parse(raw):
            click.echo(json.dumps({"file": str(path), **result.to_json()}))
    if unreadable:
        ctx.exit(1)

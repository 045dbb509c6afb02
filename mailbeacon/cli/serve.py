"""`mailbeacon serve`, its further HTTP processes and its journal loader."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Any

import click

from mailbeacon.cli.options import database_failure, open_database, setting_options, settings_from
from mailbeacon.errors import MailbeaconError
from mailbeacon.settings import Settings


@click.command()
@setting_options()
def serve(**options: Any) -> None:
    """Run the HTTP server (API and tracking endpoints) and the delivery worker."""
    settings = settings_from(options)
    _run_http(settings)


@click.command(name="http-process", hidden=True)
@click.option("--parent", type=int, required=True, help="The pid of its serve.")
def http_process(parent: int) -> None:
    """One of the further HTTP processes serve starts (--http-processes); settings come
    from the environment, and it stops once its serve is gone."""
    _run_http(settings_from({}), parent=parent)


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
        raise database_failure(exc) from exc
    if parent is None:
        click.echo(f"mailbeacon listening on http://{host}:{port} "
                   f"({settings.http_processes} HTTP process(es); tracking links: "
                   f"{settings.base_url}; relay: {runtime.relay!r})", err=True)
    http = server(MailbeaconApp(runtime), host, port, lifespan="on")
    with contextlib.suppress(KeyboardInterrupt):
        http.run(sockets=[sock])
    if not http.started:  # uvicorn has said why
        sys.exit(3)


@click.command(name="load-journal")
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

    settings = settings_from(options)
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.nice(10)  # answering hits comes first; the journal waits safely on disk meanwhile
    db = open_database(options)
    writer = HitWriter(GeoLookup(settings.geoip_db or None, preload=True),
                       settings.engagement_half_life_days)
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

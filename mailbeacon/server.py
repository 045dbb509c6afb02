"""The HTTP server: uvicorn running the application, with the tracking front
(track/front.py) taking each connection first, in one or several processes."""

from __future__ import annotations

import socket
from typing import Any

import uvicorn

from mailbeacon.app import MailbeaconApp
from mailbeacon.net.connections import Limits, fit_descriptors
from mailbeacon.net.forwarded import check_forwarded
from mailbeacon.track.front import protocol_factory

BACKLOG = 2048  # uvicorn's default


def server(app: MailbeaconApp, host: str, port: int, limits: Limits | None = None,
           **options: Any) -> uvicorn.Server:
    """A uvicorn server for `app`; `options` are uvicorn's (lifespan, ...). `limits`:
    the connection limits (connections.py), by default from the settings."""
    runtime = app.runtime
    if limits is None:
        limits = Limits(max_connections=runtime.settings.http_max_connections)
    limits = fit_descriptors(limits)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False,
        http=protocol_factory(runtime.codec, runtime.recorder, limits,  # type: ignore[arg-type]
                              hosts=app.hosts),
        **options)
    return uvicorn.Server(check_forwarded(config))


def listening_socket(host: str, port: int, shared: bool) -> socket.socket:
    """A listening TCP socket; `shared`: with SO_REUSEPORT, so that each of several
    processes binds its own socket to one port and the kernel spreads connections over
    them (one accept queue per process: no thundering herd, no process starved).
    OSError when the address is taken or cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock

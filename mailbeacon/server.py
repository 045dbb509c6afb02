"""The HTTP server: uvicorn running the application, with the tracking front
(track/front.py) taking each connection first."""

from __future__ import annotations

from typing import Any

import uvicorn

from mailbeacon.app import MailbeaconApp
from mailbeacon.track.front import protocol_factory


def server(app: MailbeaconApp, host: str, port: int, **options: Any) -> uvicorn.Server:
    """A uvicorn server for `app`; `options` are uvicorn's (lifespan, ...)."""
    runtime = app.runtime
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False,
        http=protocol_factory(runtime.codec, runtime.recorder),  # type: ignore[arg-type]
        **options)
    return uvicorn.Server(config)

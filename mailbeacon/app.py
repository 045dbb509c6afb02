"""The ASGI application: tracking endpoints, API, and the background tasks' lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Message, Receive, Scope, Send

from mailbeacon.api import (
    contacts,
    domains,
    events,
    inbound,
    messages,
    stats,
    suppressions,
    tags,
    webhooks,
)
from mailbeacon.api.access import need_of
from mailbeacon.api.auth import RequireApiKey
from mailbeacon.api.errors import api_error, http_error, unexpected_error
from mailbeacon.api.openapi import openapi_document
from mailbeacon.dashboard import build_dashboard
from mailbeacon.errors import ApiError
from mailbeacon.health import PATHS as HEALTH_PATHS
from mailbeacon.health import Health
from mailbeacon.net.limits import LimitBody
from mailbeacon.runtime import Runtime
from mailbeacon.track.endpoints import TrackingEndpoints
from mailbeacon.track.hosts import ASK_PATH, HSTS_HEADER, TlsAsk, TrackingHosts
from mailbeacon.track.unsubscribe import UnsubscribeEndpoint

_OPENAPI_METHODS = JSONResponse({"message": "Method not allowed: /openapi.json is GET only"},
                                405, headers={"Allow": "GET, HEAD"})


class MailbeaconApp:
    """Sends /o/ and /c/ straight to the lean tracking endpoints, the rest to the API."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.tracking = TrackingEndpoints(runtime.codec, runtime.recorder)
        self.unsubscribe = UnsubscribeEndpoint(runtime.codec, runtime.recorder)
        self.dashboard = build_dashboard(runtime)
        self.api = build_api(runtime)
        self.openapi = JSONResponse(openapi_document(self.api.routes))
        self.hosts = TrackingHosts(runtime.db, runtime.settings.public_url)
        self.tls_ask = TlsAsk(self.hosts)
        self.health = Health(runtime)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        prefix = scope["path"][:3] if scope["type"] == "http" else ""
        if prefix:
            send = self._with_hsts(scope, send)
        if prefix == "/tl" and scope["path"] == ASK_PATH:  # Caddy's on-demand TLS question
            await self.tls_ask(scope, receive, send)
            return
        if prefix in ("/he", "/re", "/me") and scope["path"] in HEALTH_PATHS:  # no API key
            await self.health(scope, receive, send)
            return
        if prefix == "/op" and scope["path"] == "/openapi.json":  # public: no secrets in it
            read_only = scope["method"] in ("GET", "HEAD")
            await (self.openapi if read_only else _OPENAPI_METHODS)(scope, receive, send)
            return
        if prefix in ("/o/", "/c/"):
            await self.tracking(scope, receive, send)
        elif prefix == "/u/":
            await self.unsubscribe(scope, receive, send)
        elif scope["type"] == "http" and (scope["path"] == "/dashboard"
                                          or scope["path"].startswith("/dashboard/")):
            await self.dashboard(scope, receive, send)  # its own login, not API keys
        else:
            await self.api(scope, receive, send)

    def _with_hsts(self, scope: Scope, send: Send) -> Send:
        """`send`, adding Strict-Transport-Security when the host asks for it (a browser
        heeds it only over HTTPS: RFC 6797 8.1)."""
        host = next((v for k, v in scope["headers"] if k == b"host"), b"")
        if not self.hosts.hsts(host.decode("latin-1")):
            return send

        async def send_with_hsts(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), HSTS_HEADER]}
            await send(message)

        return send_with_hsts


def merge_routes(routes: list[BaseRoute]) -> list[BaseRoute]:
    """One route per path, whatever the methods: a 405 then lists in `Allow` every
    method the path takes (separate routes per method would each list only theirs).
    Every endpoint must declare which keys may call it (`access.requires`)."""
    by_path: dict[str, dict[str, Any]] = {}
    for route in routes:
        assert isinstance(route, Route) and route.methods
        need_of(route.endpoint)  # TypeError at start-up for an undeclared route
        for method in route.methods:
            by_path.setdefault(route.path, {})[method] = route.endpoint
    merged: list[BaseRoute] = []
    for path, handlers in by_path.items():
        async def endpoint(request: Request, handlers: dict[str, Any] = handlers) -> Response:
            response: Response = await handlers[request.method](request)
            return response

        merged.append(Route(path, endpoint, methods=sorted(handlers)))
    return merged


def build_api(runtime: Runtime) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = Starlette(
        routes=merge_routes([*domains.routes, *messages.routes, *events.routes, *stats.routes,
                             *tags.routes, *inbound.routes,
                             *webhooks.routes, *suppressions.routes, *contacts.routes]),
        middleware=[
            Middleware(RequireApiKey, keys=runtime.keys),
            Middleware(LimitBody, max_bytes=runtime.settings.max_request_bytes),
        ],
        exception_handlers={
            ApiError: api_error,
            HTTPException: http_error,
            Exception: unexpected_error,
        },
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False  # an API answers, it does not redirect
    app.state.runtime = runtime
    return app


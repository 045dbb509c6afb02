"""The dashboard as one ASGI app, served under /dashboard outside the API's key auth.

    app = build_dashboard(runtime)   # answers /dashboard and /dashboard/...

Every path but the login page and static files needs a session (`Guard`); every answer
carries a strict Content-Security-Policy (no inline script, nothing from other sites).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailbeacon.errors import BadRequest, NotFound, PayloadTooLarge
from mailbeacon.net.limits import LimitBody
from mailbeacon.runtime import Runtime

from . import (
    campaigns,
    contacts,
    inbound,
    login,
    messages,
    outbox,
    overview,
    settings,
    suppressions,
)
from .sessions import SESSION_COOKIE, SessionStore, Signer, cookie_key
from .throttle import LoginThrottle
from .web import HERE, PREFIX, Dashboard, make_templates, render

# The pages' policy. Previews and charts send their own (see messages.py, charts.py).
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-src 'self'; "
       "frame-ancestors 'none'")
_PUBLIC = (PREFIX + "/login", PREFIX + "/static/")
FORM_BYTES = 64 * 1024  # the largest dashboard form body but for CSV imports


class Guard:
    """Loads the session of the cookie; without one, only the login page is served."""

    def __init__(self, app: ASGIApp, dashboard: Dashboard) -> None:
        self.app = app
        self.dashboard = dashboard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        request = Request(scope)
        token = self.dashboard.signer.unsign(request.cookies.get(SESSION_COOKIE))
        session = await run_in_threadpool(self.dashboard.sessions.load, token) \
            if token else None
        scope.setdefault("state", {})["session"] = session
        public = path == _PUBLIC[0] or path.startswith(_PUBLIC[1])
        if path == PREFIX:
            response: Response | None = RedirectResponse(PREFIX + "/", status_code=307)
        elif session is None and not public:
            target = path + (f"?{scope['query_string'].decode('latin-1')}"
                             if scope.get("query_string") else "")
            location = PREFIX + "/login"
            if path != PREFIX + "/" and request.method == "GET":
                location += "?next=" + quote(target, safe="")
            response = RedirectResponse(location, status_code=303)
        else:
            response = None
        send = _with_security_headers(send, static=path.startswith(_PUBLIC[1]))
        if response is not None:
            await response(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _with_security_headers(send: Send, static: bool) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers: list[tuple[bytes, bytes]] = list(message.get("headers", []))
            names = {name.lower() for name, _ in headers}
            extra = [(b"x-content-type-options", b"nosniff"),
                     (b"referrer-policy", b"same-origin")]
            if b"content-security-policy" not in names:
                extra.append((b"content-security-policy", CSP.encode()))
            if b"x-frame-options" not in names:
                extra.append((b"x-frame-options", b"DENY"))
            if b"cache-control" not in names and not static:
                extra.append((b"cache-control", b"no-store"))
            message = {**message, "headers": headers + extra}
        await send(message)

    return wrapped


class FormLimit(LimitBody):
    """Dashboard forms are small: a body over FORM_BYTES is refused before it is read
    (the login form included, before its CSRF check), except for a CSV import (paths
    ending in /import), which takes files up to MAILBEACON_MAX_REQUEST_BYTES."""

    def limit(self, scope: Scope) -> int:
        return self.max_bytes if scope["path"].endswith("/import") else FORM_BYTES

    def too_large(self, message: str) -> Response:
        return HTMLResponse(f"<!doctype html><title>Too large</title><p>{message}.</p>", 413)


def _error_page(request: Request, status: int, title: str, message: str) -> Response:
    return render(request, "error.html", status_code=status, title=title, message=message)


def _not_found(request: Request, exc: Exception) -> Response:
    text = exc.message if isinstance(exc, NotFound) else "There is no such page."
    return _error_page(request, 404, "Not found", text)


def _bad_request(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BadRequest)
    return _error_page(request, 400, "Bad request", exc.message)


def _too_large(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PayloadTooLarge)
    return _error_page(request, 413, "Too large", exc.message)


def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return _not_found(request, exc)
    return _error_page(request, exc.status_code, "Error", str(exc.detail))


def _unexpected(request: Request, exc: Exception) -> Response:
    return _error_page(request, 500, "Something went wrong",
                       "The server could not show this page; the error is in its log.")


def build_dashboard(runtime: Runtime) -> ASGIApp:
    """The dashboard app for one runtime; mount it so that it sees paths under /dashboard."""
    dash = Dashboard(
        runtime=runtime,
        sessions=SessionStore(runtime.db),
        signer=Signer(cookie_key(runtime.settings, runtime.db)),
        throttle=LoginThrottle(),
        templates=make_templates(),
    )
    routes: list[Any] = [
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        *login.routes,
        Route("/", overview.index),
        *overview.routes, *messages.routes, *campaigns.routes, *contacts.routes,
        *suppressions.routes, *inbound.routes, *settings.routes, *outbox.routes,
    ]
    app = Starlette(
        routes=[Mount(PREFIX, routes=routes)],
        middleware=[Middleware(Guard, dashboard=dash),
                    Middleware(FormLimit, max_bytes=runtime.settings.max_request_bytes)],
        exception_handlers={
            NotFound: _not_found,
            BadRequest: _bad_request,
            PayloadTooLarge: _too_large,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
    )
    app.state.dashboard = dash
    return app

"""HTTP basic auth with user `api` and an API key, as Mailgun does, on every API path.

What the key may do (its domain, its role) is checked per route: see `access`."""

from __future__ import annotations

import base64
import binascii

from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from mailbeacon.api.access import STATE_KEY
from mailbeacon.domains.apikeys import KeyChecker
from mailbeacon.errors import Unauthorized


def presented_key(authorization: str) -> str:
    """The key from an `Authorization: Basic` header, or Unauthorized."""
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise Unauthorized("Missing credentials: use HTTP basic auth with user 'api'")
    try:
        user, sep, key = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise Unauthorized("Malformed basic auth credentials") from exc
    if not sep or user != "api":
        raise Unauthorized("Invalid credentials: the user name must be 'api'")
    return key


class RequireApiKey:
    """Rejects any request without a valid key before it reaches a route, and leaves
    the key's grant in the request's state for the routes' `@requires` checks."""

    def __init__(self, app: ASGIApp, keys: KeyChecker) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                key = presented_key(HTTPConnection(scope).headers.get("authorization", ""))
                grant = await run_in_threadpool(self.keys.check, key)
                if grant is None:
                    raise Unauthorized("Invalid private key")
                scope.setdefault("state", {})[STATE_KEY] = grant
            except Unauthorized as exc:
                # Middleware runs outside the exception handlers: answer here.
                response = JSONResponse({"message": exc.message}, status_code=401,
                                        headers={"WWW-Authenticate": 'Basic realm="mailbeacon"'})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

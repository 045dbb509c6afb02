"""What each API route needs from the key that calls it.

Every endpoint declares its need with `@requires(...)`; `build_api` refuses a route
without one, and tests/api/test_key_scopes.py calls every route of the app with a
domain-scoped send-only key, so no route can forget the check.

    @requires(DOMAIN)            # a full key of the domain in {domain}
    async def list_tags(request):
        domain = path_domain(request)   # the Domain record, read once by @requires

For a route with a domain in its path, `@requires` also reads that domain once, after
the key's check (a 403 says nothing about whether a domain exists) and before the
endpoint runs: an unknown domain is a 404 `{"message": "Domain not found: ..."}`.

The key itself was checked by `auth.RequireApiKey`, which leaves its grant in the
request's state.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from mailbeacon.api.forms import runtime
from mailbeacon.domains.apikeys import Grant, Role
from mailbeacon.domains.domain import Domain, get_domain
from mailbeacon.errors import Forbidden, Unauthorized

STATE_KEY = "api_key"  # where RequireApiKey leaves the grant, in scope["state"]
DOMAIN_KEY = "domain"  # where @requires leaves the path's Domain, in scope["state"]


@dataclass(frozen=True)
class Need:
    """The least a key must have to call a route."""

    role: Role
    domain_param: str | None  # the path parameter naming the domain; None: no domain
    scoped_keys: bool = False  # with no domain_param: whether a one-domain key may call


SEND = Need(Role.SEND, "domain")  # send a message from {domain}
DOMAIN = Need(Role.FULL, "domain")  # read or change {domain}'s data
DOMAIN_SETTINGS = Need(Role.FULL, "name")  # /v3/domains/{name}...: the domain's settings
INSTALLATION = Need(Role.FULL, None)  # installation-wide: all-domains keys only
# GET /v3/domains: a one-domain key sees its own domain only (the handler filters).
DOMAIN_LIST = Need(Role.FULL, None, scoped_keys=True)

E = TypeVar("E", bound=Callable[..., Awaitable[Response]])


def requires(need: Need) -> Callable[[E], E]:
    """Declare and enforce what an endpoint needs: 403 before the handler runs."""

    def wrap(endpoint: E) -> E:
        @functools.wraps(endpoint)
        async def guarded(request: Request, *args: Any) -> Response:
            authorize(calling_key(request), need, request.path_params)
            if need.domain_param is not None:
                name = str(request.path_params[need.domain_param])
                found = await run_in_threadpool(get_domain, runtime(request).db, name)
                request.scope.setdefault("state", {})[DOMAIN_KEY] = found
            return await endpoint(request, *args)

        guarded.need = need  # type: ignore[attr-defined]
        return guarded  # type: ignore[return-value]

    return wrap


def need_of(endpoint: Callable[..., Any]) -> Need:
    """The endpoint's declared need; TypeError for an endpoint that declares none."""
    need = getattr(endpoint, "need", None)
    if not isinstance(need, Need):
        raise TypeError(f"API endpoint {getattr(endpoint, '__qualname__', endpoint)} "
                        "declares no @requires(...): say which keys may call it")
    return need


def path_domain(request: Request) -> Domain:
    """The domain named in the path, as `@requires` read it (its NotFound came first)."""
    found = request.scope.get("state", {}).get(DOMAIN_KEY)
    if not isinstance(found, Domain):  # a route whose Need names no domain parameter
        raise TypeError(f"{request.url.path}: the route's @requires names no domain")
    return found


def calling_key(request: Request) -> Grant:
    grant = request.scope.get("state", {}).get(STATE_KEY)
    if not isinstance(grant, Grant):  # only when mounted without RequireApiKey
        raise Unauthorized("Missing credentials: use HTTP basic auth with user 'api'")
    return grant


def authorize(grant: Grant, need: Need, path_params: dict[str, Any]) -> None:
    """Forbidden unless the key's role and scope cover `need` on these path values."""
    if not grant.may(need.role):
        raise Forbidden("This key may only send messages "
                        "(POST /v3/{domain}/messages and /v3/{domain}/messages.mime)")
    if grant.domain is None:
        return
    if need.domain_param is None:
        if not need.scoped_keys:
            raise Forbidden(f"This key is limited to the domain {grant.domain}; this "
                            "route concerns the whole installation")
        return
    if not grant.may_use(str(path_params.get(need.domain_param, ""))):
        raise Forbidden(f"This key is limited to the domain {grant.domain}")

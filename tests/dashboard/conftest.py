"""Dashboard fixtures: a running mailbeacon (both backends) with the dashboard mounted the
way mailbeacon/app.py dispatches it, and a logged-in browser-like client."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from mailbeacon.app import MailbeaconApp
from mailbeacon.dashboard import build_dashboard
from mailbeacon.dashboard.users import create_user
from tests.support import Service

USERNAME = "admin"
PASSWORD = "correct horse battery"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def with_dashboard(runtime: Any) -> ASGIApp:
    """mailbeacon's app with /dashboard dispatched to the dashboard."""
    api = MailbeaconApp(runtime)
    dashboard = build_dashboard(runtime)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == "/dashboard" or path.startswith("/dashboard/")):
            await dashboard(scope, receive, send)
        else:
            await api(scope, receive, send)

    return app


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "no CSRF field on the page"
    return found.group(1)


@dataclass
class Dash:
    """The service plus a dashboard client that keeps cookies, like a browser."""

    service: Service
    client: httpx.AsyncClient

    @property
    def db(self) -> Any:
        return self.service.runtime.db

    async def login(self, username: str = USERNAME, password: str = PASSWORD,
                    next_url: str = "") -> httpx.Response:
        page = await self.client.get("/dashboard/login")
        return await self.client.post("/dashboard/login", data={
            "csrf": csrf_of(page.text), "username": username, "password": password,
            "next": next_url})

    async def csrf(self) -> str:
        return csrf_of((await self.client.get("/dashboard/")).text)

    async def post(self, path: str, data: dict[str, Any] | None = None,
                   files: Any = None) -> httpx.Response:
        """A form as the page would send it: with the session's CSRF token."""
        return await self.client.post(path, data={"csrf": await self.csrf(), **(data or {})},
                                      files=files)


@pytest.fixture
async def dash(service_factory: Callable[..., Any]) -> AsyncIterator[Dash]:
    """No relay (mail lands in the local outbox), domain example.com, logged in."""
    async with service_factory() as service:
        await service.add_domain("example.com")
        create_user(service.runtime.db, USERNAME, PASSWORD)
        transport = httpx.ASGITransport(app=with_dashboard(service.runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            found = Dash(service, client)
            answer = await found.login()
            assert answer.status_code == 303, answer.text
            yield found


@pytest.fixture
async def anonymous(service_factory: Callable[..., Any]) -> AsyncIterator[Dash]:
    """The same, not logged in."""
    async with service_factory() as service:
        await service.add_domain("example.com")
        create_user(service.runtime.db, USERNAME, PASSWORD)
        transport = httpx.ASGITransport(app=with_dashboard(service.runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Dash(service, client)

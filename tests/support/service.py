"""An in-process mailbeacon for tests: its API through ASGI and, once a test needs it, its
real HTTP server (the tracking front and uvicorn) on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

API_KEY = "key-test-0123456789"


@dataclass
class Service:
    """A running mailbeacon (recorder and worker started), an in-process HTTP client for
    its API, and, from the first hit on (or `start_http`), its real HTTP server (the
    tracking front and uvicorn) on loopback: started lazily, because stopping uvicorn
    costs ~0.2 s and most tests never make a hit."""

    runtime: Any
    client: Any  # httpx.AsyncClient with the API key, in process (ASGI)
    app: Any = None  # the MailbeaconApp both serve
    base_url: str = ""  # the real server, http://127.0.0.1:<port>
    web: Any = None  # httpx.AsyncClient on base_url, no auth
    http: Any = None  # the uvicorn.Server
    _task: Any = None
    # Hits gathered at once all find no server yet: one starts it, the others wait.
    _starting: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def port(self) -> int:
        assert self.http is not None, "call start_http() first"
        return int(self.http.config.port)

    async def start_http(self) -> None:
        import httpx

        async with self._starting:
            if self.http is not None:
                return
            self.http, self._task = await start_server(self.app)
            self.base_url = f"http://127.0.0.1:{self.http.config.port}"
            # Hits may wait for a database that is away (SQLite's busy timeout is 10 s);
            # no proxy from the environment between the test and the server.
            self.web = httpx.AsyncClient(base_url=self.base_url, follow_redirects=False,
                                         timeout=60, trust_env=False)

    async def stop_http(self) -> None:
        """uvicorn's graceful shutdown, if the server was started."""
        if self.http is not None:
            await self.web.aclose()
            self.http.should_exit = True
            await asyncio.wait_for(self._task, 30)

    async def add_domain(self, name: str = "example.com", **fields: str) -> None:
        r = await self.client.post("/v3/domains", data={"name": name, **fields})
        assert r.status_code == 200, r.text

    async def send(self, domain: str = "example.com", files: Any = None,
                   **fields: Any) -> str:
        data = {k.replace("__", ":").replace("_", "-") if k.startswith(("o__", "h__", "v__"))
                else k: v for k, v in fields.items()}
        data.setdefault("from", "Sender <sender@example.com>")
        r = await self.client.post(f"/v3/{domain}/messages", data=data, files=files)
        assert r.status_code == 200, r.text
        return str(r.json()["id"])

    async def events(self, domain: str = "example.com", **params: Any) -> list[dict[str, Any]]:
        r = await self.client.get(f"/v3/{domain}/events", params={"limit": 300, **params})
        assert r.status_code == 200, r.text
        return list(r.json()["items"])

    async def wait_events(self, count: int, domain: str = "example.com",
                          **params: Any) -> list[dict[str, Any]]:
        """The events once there are at least `count` of them (the worker is async)."""
        for _ in range(500):
            events = await self.events(domain, **params)
            if len(events) >= count:
                return events
            await asyncio.sleep(0.02)
        raise AssertionError(f"wanted {count} events {params}, got {events}")

    async def hit(self, url: str, method: str = "GET", **kwargs: Any) -> Any:
        """Follow a tracking URL (from a message, or a bare path) over a real socket to
        the server, so the tracking front answers it."""
        await self.start_http()
        return await self.web.request(method, target(url), **kwargs)


def target(url: str) -> str:
    """The path and query of `url`, as given (a full URL or a bare path)."""
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


async def start_server(app: Any, **options: Any) -> tuple[Any, asyncio.Task[None]]:
    """`app` behind a real uvicorn server with the tracking front (mailbeacon.server), on
    a free loopback port, running as a task; returned once it listens."""
    from mailbeacon.server import listening_socket, server

    options.setdefault("lifespan", "off")
    options.setdefault("log_config", None)
    # Bound here, on port 0: a port picked first and bound later can be taken meanwhile
    # (by another test's client connection) when many tests run at once.
    sock = listening_socket("127.0.0.1", 0, shared=False)
    http = server(app, "127.0.0.1", sock.getsockname()[1], **options)
    task = asyncio.create_task(http.serve(sockets=[sock]))
    for _ in range(500):
        if http.started or task.done():
            break
        await asyncio.sleep(0.01)
    if task.done():
        task.result()
    assert http.started, "the HTTP server did not start"
    return http, task


@contextlib.asynccontextmanager
async def serving(app: Any, **options: Any) -> AsyncIterator[Any]:
    """`start_server`, and uvicorn's graceful shutdown on the way out."""
    http, task = await start_server(app, **options)
    try:
        yield http
    finally:
        http.should_exit = True
        await asyncio.wait_for(task, 30)

"""The host names this server answers for over HTTPS: which may get a certificate, which
send HSTS.

A TLS front with on-demand certificates (Caddy, deploy/Caddyfile) asks `GET
/tls/ask?domain=HOST` before it obtains a certificate for a name it was sent: 200 exactly
for the tracking host of each domain and for the host of MAILBEACON_PUBLIC_URL, else 4xx,
so nobody can make it fetch certificates for names of their choosing. A domain whose
`web_scheme` is https also has its tracking host answer with Strict-Transport-Security.

Both read one snapshot of the domains table, held in memory and loaded again in a thread
(never on the event loop) when it is older than `max_age`. A name the snapshot lacks is
looked up in one loaded after it was asked for, so a domain added a moment ago gets its
certificate at once; loads start at most once per `miss_age`, so a stream of asks for
unknown names costs at most one query a second, whatever its rate.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from mailbeacon.domains.domain import dns_name
from mailbeacon.errors import BadRequest
from mailbeacon.storage.db import Database
from mailbeacon.storage.schema import domains

log = logging.getLogger("mailbeacon.track")

ASK_PATH = "/tls/ask"
# A year; no includeSubDomains: the names under a tracking host are not ours to bind.
HSTS_HEADER = (b"strict-transport-security", b"max-age=31536000")
_MAX_ASK = 1024  # longer than any DNS name in any spelling: refused before parsing


@dataclass(frozen=True)
class HostSets:
    """One snapshot: the names that may get a certificate, those that send HSTS."""

    certified: frozenset[str] = frozenset()
    hsts: frozenset[str] = frozenset()


def host_name(text: str) -> str | None:
    """`text` as a canonical DNS host name (lowercase ASCII, IDNA, no trailing dot), or
    None when it is not one: an IP address, a wildcard, spaces, an empty label..."""
    if not text or len(text) > _MAX_ASK or not text.isprintable() or text.isspace():
        return None
    try:
        ipaddress.ip_address(text.strip("[]"))
        return None  # certificates on demand are for names
    except ValueError:
        pass
    if any(c.isspace() or c in "/\\:@%*" for c in text) or text.endswith(".."):
        return None
    try:
        name = dns_name(text, "not a host name")
    except BadRequest:
        return None
    if "." not in name or name.rsplit(".", 1)[-1].isdigit():
        return None
    return name


def load_hosts(db: Database, public_url: str) -> HostSets:
    """The snapshot, from the domains table (one query) and the public URL."""
    with db.read() as conn:
        rows = conn.execute(select(domains.c.tracking_url, domains.c.web_scheme)
                            .where(domains.c.tracking_url.is_not(None))).all()
    certified: set[str] = set()
    hsts: set[str] = set()
    for url, scheme in rows:
        name = host_name(urlsplit(url).hostname or "")
        if name is not None:
            certified.add(name)
            if scheme == "https":
                hsts.add(name)
    public = host_name(urlsplit(public_url).hostname or "") if public_url else None
    if public is not None:
        certified.add(public)
    return HostSets(frozenset(certified), frozenset(hsts))


class TrackingHosts:
    """The snapshot of one process, and when it was loaded."""

    def __init__(self, db: Database, public_url: str, *, max_age: float = 30.0,
                 miss_age: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._db = db
        self._public_url = public_url
        self._max_age = max_age
        self._miss_age = miss_age
        self._clock = clock
        self.sets = HostSets()
        self._loaded_at = -float("inf")
        self._loading: asyncio.Task[None] | None = None

    async def may_certify(self, name: str) -> bool:
        """Whether `name` (canonical, see `host_name`) may get a certificate. A name the
        snapshot lacks is looked up in a snapshot loaded after the question came (loads
        start at most once per `miss_age`; askers meanwhile wait and share one)."""
        arrived = self._clock()
        if arrived - self._loaded_at > self._max_age and not await self._reloaded():
            return name in self.sets.certified
        while name not in self.sets.certified and self._loaded_at < arrived:
            wait = self._loaded_at + self._miss_age - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
            if self._loaded_at < arrived and not await self._reloaded():
                break  # the database away: the snapshot held answers
        return name in self.sets.certified

    async def _reloaded(self) -> bool:
        try:
            await self.reload()
        except Exception:  # logged by _logged
            return False
        return True

    def hsts(self, host: str) -> bool:
        """Whether a request with this Host header gets HSTS. Never waits: a stale
        snapshot is reloaded in the background, this answer comes from the one held."""
        if self._clock() - self._loaded_at > self._max_age:
            self._start_load()
        if not self.sets.hsts:
            return False
        name, _, port = host.rpartition(":")
        if not port.isdigit():
            name = host
        return name.rstrip(".").lower() in self.sets.hsts

    async def reload(self) -> None:
        """Load the snapshot again (one load at a time: askers meanwhile share it)."""
        await asyncio.shield(self._start_load())

    def _start_load(self) -> asyncio.Task[None]:
        if self._loading is None or self._loading.done():
            self._loading = asyncio.get_running_loop().create_task(self._load())
            self._loading.add_done_callback(_logged)
        return self._loading

    async def _load(self) -> None:
        started = self._clock()
        self.sets = await asyncio.to_thread(load_hosts, self._db, self._public_url)
        self._loaded_at = started


def _logged(task: asyncio.Task[None]) -> None:
    """A reload that failed leaves the old snapshot; the next call retries."""
    if not task.cancelled() and task.exception() is not None:
        log.warning("TLS hosts not reloaded: %s", task.exception())


class TlsAsk:
    """`GET /tls/ask?domain=HOST`: 200 when HOST may get a certificate, 404 when it may
    not, 400 when it is not a host name. No API key: Caddy asks, and the answer tells
    nobody more than DNS does."""

    def __init__(self, hosts: TrackingHosts) -> None:
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.answer(Request(scope))
        await response(scope, receive, send)

    async def answer(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return JSONResponse({"message": "Method not allowed: /tls/ask is GET only"}, 405,
                                headers={"Allow": "GET, HEAD"})
        given = request.query_params.getlist("domain")
        if len(given) != 1:
            return JSONResponse({"message": "Give one 'domain' parameter: the host name "
                                            "to check"}, 400)
        name = host_name(given[0])
        if name is None:
            return JSONResponse({"message": "'domain' is not a host name"}, 400)
        if not await self.hosts.may_certify(name):
            return JSONResponse({"message": "Not a tracking host of this server"}, 404)
        return JSONResponse({"message": "OK", "domain": name})

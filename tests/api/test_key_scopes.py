"""Key scopes and roles on every API route: a one-domain key stays in its domain, a
send-only key only sends. The routes are enumerated from the app itself, so a route
added later is covered without anyone remembering to add it here."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mailbeacon.app import merge_routes
from mailbeacon.domains.apikeys import Role, create_key
from tests.support import Service

OWN, OTHER = "example.com", "other.example"
SENDING = {("POST", "/v3/{domain}/messages"), ("POST", "/v3/{domain}/messages.mime")}
_PARAM = re.compile(r"{(\w+)(?::\w+)?}")
# A plausible value for each path parameter other than the domain.
_VALUES = {"tag": "autumn", "address": "alice@example.org", "webhook": "delivered",
           "delivery": "00000000000000000000000000", "page": "x",
           "message_id": "m@example.com"}


def api_routes(service: Service) -> Iterator[tuple[str, str]]:
    """(method, path template) of every API route the app serves."""
    for route in service.app.api.routes:
        assert isinstance(route, Route) and route.methods
        for method in sorted(route.methods - {"HEAD"}):
            yield method, route.path


def fill(path: str, domain: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        return domain if name in ("domain", "name") else _VALUES[name]

    return _PARAM.sub(value, path)


def is_installation_wide(path: str) -> bool:
    return "{domain}" not in path and "{name}" not in path


@pytest.fixture
async def keyed(service: Service) -> Service:
    await service.add_domain(OTHER)
    return service


async def test_a_send_only_key_of_one_domain_is_refused_everywhere_but_sending(
        keyed: Service) -> None:
    key = create_key(keyed.runtime.db, "shop", domain=OWN, role=Role.SEND)
    routes = list(api_routes(keyed))
    assert len(routes) > 40  # the enumeration found the API, not an empty list
    for method, path in routes:
        for domain in (OWN, OTHER):
            r = await keyed.client.request(method, fill(path, domain), auth=("api", key))
            allowed = (method, path) in SENDING and domain == OWN
            if allowed:
                assert r.status_code not in (401, 403, 500), (method, path, r.text)
            else:
                assert r.status_code == 403, (method, path, domain, r.status_code, r.text)
                assert r.json()["message"], (method, path)


async def test_a_full_key_of_one_domain_stays_in_its_domain(keyed: Service) -> None:
    key = create_key(keyed.runtime.db, "ops", domain=OWN)
    for method, path in api_routes(keyed):
        if is_installation_wide(path):
            continue
        r = await keyed.client.request(method, fill(path, OTHER), auth=("api", key))
        assert r.status_code == 403, (method, path, r.status_code, r.text)
        r = await keyed.client.request(method, fill(path, OWN), auth=("api", key))
        assert r.status_code not in (401, 403, 500), (method, path, r.text)
    # Installation-wide: creating a domain is refused; the list shows its own domain only.
    r = await keyed.client.post("/v3/domains", data={"name": "new.example"},
                                auth=("api", key))
    assert r.status_code == 403 and "limited to the domain example.com" in r.json()["message"]
    r = await keyed.client.get("/v3/domains", auth=("api", key))
    assert r.status_code == 200
    assert r.json()["total_count"] == 1
    assert [d["name"] for d in r.json()["items"]] == [OWN]


async def test_what_the_issue_reproduced_is_refused(keyed: Service) -> None:
    """A second key read and changed another domain's settings and read its webhook
    signing key."""
    key = create_key(keyed.runtime.db, "other app", domain=OTHER)
    client, auth = keyed.client, ("api", key)
    r = await client.get(f"/v3/domains/{OWN}/webhooks/signing_key", auth=auth)
    assert r.status_code == 403
    r = await client.put(f"/v3/domains/{OWN}/tracking/open", data={"active": "no"},
                         auth=auth)
    assert r.status_code == 403
    r = await client.get(f"/v3/domains/{OWN}", auth=auth)
    assert r.status_code == 403
    # Other spellings of the domain name are the same domain, and refused alike.
    for spelling in ("EXAMPLE.com", "example.com.", "%65xample.com"):
        r = await client.get(f"/v3/{spelling}/events", auth=auth)
        assert r.status_code == 403, spelling
    # Its own domain works; the settings key still sees everything.
    r = await client.get(f"/v3/domains/{OTHER}/webhooks/signing_key", auth=auth)
    assert r.status_code == 200 and r.json()["http_signing_key"]
    r = await client.get(f"/v3/domains/{OWN}/webhooks/signing_key")
    assert r.status_code == 200
    r = await client.get("/v3/domains")
    assert r.json()["total_count"] == 2


async def test_a_send_only_key_sends_and_reads_nothing(keyed: Service) -> None:
    key = create_key(keyed.runtime.db, "app", domain=OWN, role=Role.SEND)
    r = await keyed.client.post(f"/v3/{OWN}/messages", auth=("api", key), data={
        "from": f"shop@{OWN}", "to": "alice@example.org", "subject": "Hi", "text": "Hi"})
    assert r.status_code == 200, r.text
    mime = (b"From: shop@example.com\r\nTo: bob@example.org\r\nSubject: Hi\r\n\r\nHi\r\n")
    r = await keyed.client.post(f"/v3/{OWN}/messages.mime", auth=("api", key),
                                data={"to": "bob@example.org"},
                                files={"message": ("m.eml", mime, "message/rfc822")})
    assert r.status_code == 200, r.text
    r = await keyed.client.get(f"/v3/{OWN}/events", auth=("api", key))
    assert r.status_code == 403
    assert r.json() == {"message": "This key may only send messages (POST "
                                   "/v3/{domain}/messages and /v3/{domain}/messages.mime)"}
    # An all-domains send-only key sends from any domain, and reads nothing either.
    anywhere = create_key(keyed.runtime.db, "relay", role=Role.SEND)
    r = await keyed.client.post(f"/v3/{OTHER}/messages", auth=("api", anywhere), data={
        "from": f"news@{OTHER}", "to": "carol@example.org", "subject": "Hi", "text": "Hi"})
    assert r.status_code == 200, r.text
    r = await keyed.client.get("/v3/domains", auth=("api", anywhere))
    assert r.status_code == 403


def test_a_route_that_declares_nothing_is_refused_at_start_up() -> None:
    async def undeclared(request: Request) -> JSONResponse:
        return JSONResponse({})

    with pytest.raises(TypeError, match="declares no @requires"):
        merge_routes([Route("/v3/{domain}/new", undeclared, methods=["GET"])])


async def test_an_unknown_domain_is_a_404_on_every_domain_route(service: Service) -> None:
    """`@requires` reads the path's domain once for every route that names one."""
    routes = [(m, p) for m, p in api_routes(service) if not is_installation_wide(p)]
    assert len(routes) > 40
    for method, path in routes:
        r = await service.client.request(method, fill(path, "nowhere.example"))
        assert r.status_code == 404, (method, path, r.status_code, r.text)
        assert r.json() == {"message": "Domain not found: nowhere.example"}, (method, path)


async def test_the_domain_is_read_once_per_request(service: Service) -> None:
    reads: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if re.search(r"\bFROM domains\b", statement):
            reads.append(statement)

    # Every engine: SQLite reads and writes through two.
    event.listen(Engine, "before_cursor_execute", seen)
    try:
        for method, path in (("GET", f"/v3/{OWN}/tags"), ("GET", f"/v3/domains/{OWN}/bots"),
                             ("PUT", f"/v3/domains/{OWN}/bots"),
                             ("GET", f"/v3/domains/{OWN}/privacy"),
                             ("GET", f"/v3/domains/{OWN}/webhooks")):
            reads.clear()
            data = {"burst_links": "4"} if method == "PUT" else None
            r = await service.client.request(method, path, data=data)
            assert r.status_code == 200, (path, r.text)
            # PUT reads the domain back in its write transaction: twice in all.
            assert len(reads) == (2 if method == "PUT" else 1), (method, path, reads)
    finally:
        event.remove(Engine, "before_cursor_execute", seen)
    assert (await service.client.get(f"/v3/domains/{OWN}/bots")).json()["bots"][
        "burst_links"] == 4

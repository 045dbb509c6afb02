"""Authentication, domains, and the error shape of bad input."""

from __future__ import annotations

import base64

import pytest

from mailbeacon.domains.apikeys import create_key
from tests.support import Service


@pytest.mark.parametrize("auth", [
    None,
    ("api", "wrong-key"),
    ("admin", "key-test-0123456789"),
    ("api", ""),
])
async def test_bad_credentials_are_401_json(service: Service,
                                            auth: tuple[str, str] | None) -> None:
    client = service.client
    for method, path in (("GET", "/v3/domains"), ("POST", "/v3/example.com/messages"),
                         ("GET", "/v3/example.com/events"), ("GET", "/nowhere")):
        r = await client.request(method, path, auth=auth)
        assert r.status_code == 401, (method, path)
        assert r.json()["message"]
        assert r.headers["www-authenticate"].startswith("Basic")


async def test_malformed_authorization_header(service: Service) -> None:
    for header in ("Bearer abc", "Basic !!!", "Basic " + base64.b64encode(b"api").decode()):
        r = await service.client.get("/v3/domains", auth=None,
                                     headers={"authorization": header})
        assert r.status_code == 401
        assert "message" in r.json()


async def test_created_keys_are_accepted(service: Service) -> None:
    key = create_key(service.runtime.db, "ci")
    assert key.startswith("key-")
    r = await service.client.get("/v3/domains", auth=("api", key))
    assert r.status_code == 200


async def test_domains_api(service: Service) -> None:
    client = service.client
    r = await client.post("/v3/domains", data={"name": "News.Example.ORG",
                                               "tracking_url": "https://email.example.org/"})
    assert r.status_code == 200
    assert r.json()["domain"]["name"] == "news.example.org"
    assert r.json()["domain"]["tracking_url"] == "https://email.example.org"
    r = await client.get("/v3/domains")
    assert r.json()["total_count"] == 2
    assert [d["name"] for d in r.json()["items"]] == ["example.com", "news.example.org"]
    r = await client.get("/v3/domains/news.example.org")
    assert r.json()["domain"]["web_scheme"] == "https"
    tracking = r.json()["tracking"]
    assert tracking["open"] == {"active": True, "place_at_the_top": False}
    assert tracking["click"] == {"active": True}
    assert tracking["unsubscribe"]["active"] is False
    r = await client.put("/v3/domains/news.example.org/tracking/click",
                         data={"active": "htmlonly"})
    assert r.json()["click"] == {"active": "htmlonly"}
    r = await client.put("/v3/domains/news.example.org/tracking/open",
                         data={"active": "false", "place_at_the_top": "yes"})
    assert r.json()["open"] == {"active": False, "place_at_the_top": True}
    r = await client.get("/v3/domains/news.example.org/tracking")
    assert r.json()["tracking"]["open"]["active"] is False


@pytest.mark.parametrize(("given", "stored"), [
    ("HTTPS://Email.Example.ORG:8443/", "https://email.example.org:8443"),
    ("https://b\u00fccher.example.org", "https://xn--bcher-kva.example.org"),
    ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),  # IP literals: tests, private setups
    ("http://[::1]:8080/", "http://[::1]:8080"),
    ("https://a1.b-2.example.org.", "https://a1.b-2.example.org"),
])
async def test_tracking_url_is_stored_canonical(service: Service, given: str,
                                                stored: str) -> None:
    r = await service.client.put("/v3/domains/example.com", data={"tracking_url": given})
    assert r.status_code == 200, r.text
    r = await service.client.get("/v3/domains/example.com")
    assert r.json()["domain"]["tracking_url"] == stored


@pytest.mark.parametrize(("method", "path", "data", "status", "words"), [
    ("POST", "/v3/domains", {}, 400, "'name'"),
    ("POST", "/v3/domains", {"name": "example.com"}, 400, "already exists"),
    ("POST", "/v3/domains", {"name": "not a domain"}, 400, "not a valid domain"),
    ("POST", "/v3/domains", {"name": "x.org", "tracking_url": "ftp://x.org"}, 400, "tracking"),
    ("POST", "/v3/domains", {"name": "x.org", "tracking_url": "https://-bad-.example.net"},
     400, "label '-bad-'"),
    ("POST", "/v3/domains", {"name": "x.org", "tracking_url": "https://t_x.example.net"},
     400, "not a valid DNS name"),
    ("POST", "/v3/domains", {"name": "x.org", "tracking_url": "https://t.example.123"},
     400, "all digits"),
    ("POST", "/v3/domains", {"name": "x.org", "tracking_url": "https://t.example.net/track"},
     400, "must not have a path"),
    ("PUT", "/v3/domains/example.com", {"tracking_url": "https://t.example.net/a/"}, 400,
     "must not have a path"),
    ("PUT", "/v3/domains/example.com", {"tracking_url": "https://a-.example.net"}, 400,
     "no hyphen at either end"),
    ("GET", "/v3/domains/nope.example.com", None, 404, "Domain not found"),
    ("PUT", "/v3/domains/example.com/tracking/click", {"active": "maybe"}, 400, "'active'"),
    ("PUT", "/v3/domains/example.com/tracking/open", {}, 400, "'active'"),
    ("GET", "/v3/domains?limit=5000", None, 400, "'limit'"),
])
async def test_domain_errors(service: Service, method: str, path: str,
                             data: dict[str, str] | None, status: int, words: str) -> None:
    r = await service.client.request(method, path, data=data)
    assert r.status_code == status
    assert words in r.json()["message"]


GOOD = {"from": "Sender <sender@example.com>", "to": "alice@example.org", "text": "hi"}


@pytest.mark.parametrize(("change", "words"), [
    ({"from": None}, "'from'"),
    ({"to": None}, "'to'"),
    ({"text": None}, "'text' or 'html'"),
    ({"from": "not an address"}, "'from'"),
    ({"to": "alice@"}, "'to'"),
    ({"cc": "bob@@example.org"}, "'cc'"),
    ({"o:tag": ["a", "b", "c", "d"]}, "Too many tags"),
    ({"o:tag": "x" * 129}, "Tag"),
    ({"o:tag": "caf\u00e9"}, "ASCII"),
    ({"o:tracking": "perhaps"}, "'o:tracking'"),
    ({"o:tracking-clicks": "sometimes"}, "'o:tracking-clicks'"),
    ({"h:Bad Name": "x"}, "header name"),
    ({"h:X-Ok": "a\r\nBcc: evil@example.org"}, "line breaks"),
    ({"h:From": "x@example.org"}, "cannot be set"),
    ({"subject": "a\nb"}, "line breaks"),
])
async def test_bad_messages_are_400(service: Service, change: dict[str, object],
                                    words: str) -> None:
    data = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    r = await service.client.post("/v3/example.com/messages", data=data)
    assert r.status_code == 400, r.text
    assert words in r.json()["message"]
    assert await service.events(event="accepted") == []


async def test_unknown_domain_is_404(service: Service) -> None:
    r = await service.client.post("/v3/other.example.com/messages", data=GOOD)
    assert r.status_code == 404
    assert r.json() == {"message": "Domain not found: other.example.com"}


async def test_oversized_request_is_413(service_factory: object) -> None:
    async with service_factory(max_request_bytes=4096) as svc:  # type: ignore[operator]
        await svc.add_domain()
        r = await svc.client.post("/v3/example.com/messages",
                                  data={**GOOD, "html": "<p>" + "x" * 10_000 + "</p>"})
        assert r.status_code == 413
        assert "limit" in r.json()["message"]
        files = {"attachment": ("big.bin", b"\0" * 10_000, "application/octet-stream")}
        r = await svc.client.post("/v3/example.com/messages", data=GOOD, files=files)
        assert r.status_code == 413
        assert await svc.events(event="accepted") == []


async def test_garbage_bodies_are_4xx_not_500(service: Service) -> None:
    r = await service.client.post(
        "/v3/example.com/messages", content=b"--xx\r\nnot really multipart",
        headers={"content-type": "multipart/form-data; boundary=xx"})
    assert 400 <= r.status_code < 500
    assert "message" in r.json()
    r = await service.client.post("/v3/example.com/messages", content=b"\xff\xfe=\xff",
                                  headers={"content-type": "application/x-www-form-urlencoded"})
    assert 400 <= r.status_code < 500
    r = await service.client.post("/v3/example.com/messages", json={"from": "x"})
    assert r.status_code == 400

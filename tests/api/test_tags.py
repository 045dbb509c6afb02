"""The Tags API over HTTP, and `touch_tags`, on both backends."""

from __future__ import annotations

from collections.abc import Sequence
from email.utils import formatdate
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import select

from mailbeacon.insight.tags import touch_tags
from mailbeacon.storage.schema import stats_buckets
from mailbeacon.storage.schema import tags as tags_table
from tests.support import Service

T0 = 1_700_000_000 * 1_000_000  # µs: Tue, 14 Nov 2023 22:13:20 GMT
BASE = "http://127.0.0.1:8080/v3/example.com/tags"  # the public URL (--http by default)


@pytest.fixture
def client(service: Service) -> httpx.AsyncClient:
    """The service's authenticated API client."""
    return service.client  # type: ignore[no-any-return]


def touch(service: Service, tags: Sequence[str], ts: int = T0,
          domain: str = "example.com") -> None:
    with service.runtime.db.write() as conn:
        touch_tags(conn, domain, tags, ts)


def rows(service: Service) -> dict[str, tuple[str, int, int]]:
    with service.runtime.db.read() as conn:
        found = conn.execute(select(tags_table).where(tags_table.c.domain == "example.com"))
        return {r.tag: (r.description, r.first_seen, r.last_seen) for r in found}


def date(us: int) -> str:
    return formatdate(us / 1_000_000, usegmt=True)


async def walk(client: httpx.AsyncClient, url: str, direction: str) -> list[str]:
    """Follow `direction` paging URLs until an empty page; the tags seen, page by page."""
    seen: list[str] = []
    for _ in range(100):
        r = await client.get(url)
        assert r.status_code == 200, r.text
        page = r.json()
        if not page["items"]:
            return seen
        names = [item["tag"] for item in page["items"]]
        seen += names if direction == "next" else names[::-1]
        url = page["paging"][direction]
    raise AssertionError("paging did not end")


async def test_touch_tags_keeps_first_seen_and_description(service: Service,
                                                           client: httpx.AsyncClient) -> None:
    touch(service, ["red", "blue", "red"], T0)  # duplicates in one call are fine
    touch(service, [], T0)
    assert rows(service) == {"red": ("", T0, T0), "blue": ("", T0, T0)}
    r = await client.put("/v3/example.com/tags/red", data={"description": "Red mail"})
    assert r.json() == {"message": "Tag updated"}
    touch(service, ["red"], T0 + 5_000_000)
    assert rows(service)["red"] == ("Red mail", T0, T0 + 5_000_000)
    touch(service, ["red"], T0 + 1_000_000)  # a message stored late does not go back
    assert rows(service)["red"] == ("Red mail", T0, T0 + 5_000_000)
    touch(service, ["red"], T0, domain="other.example.com")
    assert rows(service)["red"] == ("Red mail", T0, T0 + 5_000_000)


async def test_get_put_delete(service: Service, client: httpx.AsyncClient) -> None:
    touch(service, ["red"], T0)
    touch(service, ["red"], T0 + 90 * 1_000_000)
    r = await client.get("/v3/example.com/tags/red")
    assert r.status_code == 200
    assert r.json() == {"tag": "red", "description": "", "first-seen": date(T0),
                        "last-seen": date(T0 + 90 * 1_000_000)}
    assert r.json()["first-seen"] == "Tue, 14 Nov 2023 22:13:20 GMT"
    r = await client.put("/v3/example.com/tags/red", data={"description": "Campaign"})
    assert r.status_code == 200
    assert (await client.get("/v3/example.com/tags/red")).json()["description"] == "Campaign"
    r = await client.put("/v3/example.com/tags/red", data={"description": ""})
    assert (await client.get("/v3/example.com/tags/red")).json()["description"] == ""
    r = await client.delete("/v3/example.com/tags/red")
    assert r.status_code == 200
    assert r.json() == {"message": "Tag deleted"}
    r = await client.get("/v3/example.com/tags/red")
    assert r.status_code == 404
    assert r.json() == {"message": "tag not found"}
    touch(service, ["red"], T0 + 100 * 1_000_000)  # sent again: a new tag
    assert rows(service)["red"] == ("", T0 + 100 * 1_000_000, T0 + 100 * 1_000_000)


async def test_names_in_paths_are_case_insensitive(service: Service,
                                                   client: httpx.AsyncClient) -> None:
    touch(service, ["newsletter", "b c&d"])
    assert (await client.get("/v3/example.com/tags/NewsLetter")).json()["tag"] == "newsletter"
    r = await client.put("/v3/example.com/tags/NEWSLETTER", data={"description": "weekly"})
    assert r.status_code == 200
    assert rows(service)["newsletter"][0] == "weekly"
    # Any printable ASCII but '|' and '/' is a tag, once percent-encoded.
    path = "/v3/example.com/tags/" + quote("B C&D", safe="")
    assert (await client.get(path)).json()["tag"] == "b c&d"
    assert (await client.delete("/v3/example.com/tags/newsLETTER")).status_code == 200
    assert (await client.delete(path)).status_code == 200
    assert rows(service) == {}


async def test_delete_removes_only_that_tags_stats(service: Service,
                                                   client: httpx.AsyncClient) -> None:
    touch(service, ["red", "blue"])
    touch(service, ["red"], domain="other.example.com")
    buckets = [{"domain": d, "tag": t, "event": e, "hour": h, "count": 1}
               for d in ("example.com", "other.example.com") for t in ("", "red", "blue")
               for e in ("accepted", "delivered") for h in (3600, 7200)]
    with service.runtime.db.write() as conn:
        conn.execute(stats_buckets.insert(), buckets)
    assert (await client.delete("/v3/example.com/tags/red")).status_code == 200
    with service.runtime.db.read() as conn:
        left = {(r.domain, r.tag) for r in conn.execute(select(stats_buckets))}
    assert left == {("example.com", ""), ("example.com", "blue"),
                    ("other.example.com", ""), ("other.example.com", "red"),
                    ("other.example.com", "blue")}
    assert set(rows(service)) == {"blue"}
    # A missing tag is a 404 and deletes no counters.
    assert (await client.delete("/v3/example.com/tags/red")).status_code == 404
    with service.runtime.db.read() as conn:
        assert len(conn.execute(select(stats_buckets)).all()) == 20


async def test_events_keep_deleted_tags(service: Service, client: httpx.AsyncClient) -> None:
    fields: dict[str, Any] = {"o:tag": ["Promo"]}
    await service.send(to="alice@example.org", subject="s", text="t", **fields)
    await service.wait_events(1, event="accepted")
    touch(service, ["promo"])  # until intake does it (then this is a no-op)
    assert (await client.delete("/v3/example.com/tags/promo")).status_code == 200
    kept = await service.events(event="accepted", tags="promo")
    assert len(kept) == 1
    assert kept[0]["tags"] == ["promo"]


ALL = ["a b", "a-b", "a_b", "ab", "alpha", "beta", "delta", "gamma", "q&x=1", "z/y", "~"]


async def test_paging_walks_every_tag_once_in_order(service: Service,
                                                    client: httpx.AsyncClient) -> None:
    touch(service, ALL[::-1])
    assert await walk(client, "/v3/example.com/tags?limit=2", "next") == sorted(ALL)
    assert await walk(client, "/v3/example.com/tags?page=last&limit=2", "previous") \
        == sorted(ALL, reverse=True)

    r = await client.get("/v3/example.com/tags", params={"limit": 2})
    assert [i["tag"] for i in r.json()["items"]] == ["a b", "a-b"]
    assert r.json()["paging"] == {
        "first": f"{BASE}?page=first&limit=2",
        "next": f"{BASE}?page=next&tag=a-b&limit=2",
        "previous": f"{BASE}?page=prev&tag=a%20b&limit=2",
        "last": f"{BASE}?page=last&limit=2",
    }
    r = await client.get("/v3/example.com/tags", params={"page": "next", "tag": "gamma",
                                                         "limit": 2})
    assert [i["tag"] for i in r.json()["items"]] == ["q&x=1", "z/y"]
    assert r.json()["paging"]["next"] == f"{BASE}?page=next&tag=z%2Fy&limit=2"
    r = await client.get(r.json()["paging"]["previous"])
    assert [i["tag"] for i in r.json()["items"]] == ["delta", "gamma"]
    r = await client.get("/v3/example.com/tags?page=last&limit=3")
    assert [i["tag"] for i in r.json()["items"]] == ["q&x=1", "z/y", "~"]

    # Past either end: an empty page whose way back leads to that end's page.
    r = await client.get("/v3/example.com/tags?page=next&tag=~&limit=2")
    assert r.json()["items"] == []
    back = await client.get(r.json()["paging"]["previous"])
    assert [i["tag"] for i in back.json()["items"]] == ["z/y", "~"]
    r = await client.get("/v3/example.com/tags?page=prev&tag=a%20b&limit=2")
    assert r.json()["items"] == []
    forward = await client.get(r.json()["paging"]["next"])
    assert [i["tag"] for i in forward.json()["items"]] == ["a b", "a-b"]

    r = await client.get("/v3/example.com/tags")  # default limit 100: everything
    assert [i["tag"] for i in r.json()["items"]] == sorted(ALL)


async def test_prefix(service: Service, client: httpx.AsyncClient) -> None:
    touch(service, ["new", "news-1", "news-2", "newsletter", "promo", "a_b", "axb", "a%c"])
    for prefix in ("news", "NEWS"):
        assert await walk(client, f"/v3/example.com/tags?prefix={prefix}&limit=2", "next") \
            == ["news-1", "news-2", "newsletter"]
    r = await client.get("/v3/example.com/tags", params={"prefix": "news", "limit": 2})
    assert r.json()["paging"]["next"] == f"{BASE}?page=next&tag=news-2&limit=2&prefix=news"
    # LIKE wildcards in a prefix are plain characters.
    r = await client.get("/v3/example.com/tags", params={"prefix": "a_"})
    assert [i["tag"] for i in r.json()["items"]] == ["a_b"]
    r = await client.get("/v3/example.com/tags", params={"prefix": "a%"})
    assert [i["tag"] for i in r.json()["items"]] == ["a%c"]
    r = await client.get("/v3/example.com/tags", params={"prefix": "zzz"})
    assert r.json()["items"] == []


async def test_empty_list(client: httpx.AsyncClient) -> None:
    r = await client.get("/v3/example.com/tags")
    assert r.status_code == 200
    assert r.json() == {"items": [], "paging": {
        "first": f"{BASE}?page=first&limit=100", "next": f"{BASE}?page=first&limit=100",
        "previous": f"{BASE}?page=last&limit=100", "last": f"{BASE}?page=last&limit=100"}}


async def test_no_tag_is_404(client: httpx.AsyncClient) -> None:
    r = await client.get("/v3/example.com/tags/")
    assert r.status_code == 404 and "message" in r.json()


@pytest.mark.parametrize(("path", "words"), [
    ("x" * 129, "1 to 128 printable ASCII"),
    ("caf%C3%A9", "ASCII"),
    ("a%01b", "printable"),
    ("a%7Fb", "printable"),
    ("a|b", "'|'"),
    ("%20%20", "1 to 128"),
])
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_invalid_tag_is_400(client: httpx.AsyncClient, method: str, path: str,
                                  words: str) -> None:
    r = await client.request(method, f"/v3/example.com/tags/{path}",
                             data={"description": "d"} if method == "PUT" else None)
    assert r.status_code == 400, r.text
    assert words in r.json()["message"]
    assert "Tag" in r.json()["message"]


@pytest.mark.parametrize(("query", "words"), [
    ("limit=0", "'limit' must be an integer from 1 to 1000"),
    ("limit=1001", "'limit'"),
    ("limit=-1", "'limit'"),
    ("limit=abc", "'limit'"),
    ("limit=%C2%B2", "'limit'"),
    ("limit=" + "1" * 5000, "'limit'"),
    ("page=sideways", "'page'"),
    ("page=next", "'tag' is required"),
    ("page=prev&limit=5", "'tag' is required"),
])
async def test_bad_list_parameters_are_400(client: httpx.AsyncClient, query: str,
                                           words: str) -> None:
    r = await client.get(f"/v3/example.com/tags?{query}")
    assert r.status_code == 400, r.text
    assert words in r.json()["message"]


async def test_limit_bounds_are_accepted(service: Service, client: httpx.AsyncClient) -> None:
    touch(service, ["a", "b"])
    for limit, count in (("1", 1), ("1000", 2)):
        r = await client.get("/v3/example.com/tags", params={"limit": limit})
        assert len(r.json()["items"]) == count


@pytest.mark.parametrize(("method", "path", "data", "message"), [
    ("GET", "/v3/example.com/tags/nope", None, "tag not found"),
    ("PUT", "/v3/example.com/tags/nope", {"description": "x"}, "tag not found"),
    ("DELETE", "/v3/example.com/tags/nope", None, "tag not found"),
    ("GET", "/v3/other.example.com/tags", None, "Domain not found: other.example.com"),
    ("GET", "/v3/other.example.com/tags/red", None, "Domain not found: other.example.com"),
    ("PUT", "/v3/other.example.com/tags/red", {"description": "x"},
     "Domain not found: other.example.com"),
    ("DELETE", "/v3/other.example.com/tags/red", None, "Domain not found: other.example.com"),
])
async def test_not_found(service: Service, client: httpx.AsyncClient, method: str, path: str,
                         data: dict[str, Any] | None, message: str) -> None:
    touch(service, ["red"], domain="other.example.com")  # tags of an unknown domain
    r = await client.request(method, path, data=data)
    assert r.status_code == 404
    assert r.json() == {"message": message}


async def test_put_needs_a_description(service: Service, client: httpx.AsyncClient) -> None:
    touch(service, ["red"])
    r = await client.put("/v3/example.com/tags/red", data={})
    assert r.status_code == 400
    assert "'description'" in r.json()["message"]

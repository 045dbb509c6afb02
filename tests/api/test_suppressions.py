"""The Suppressions API (bounces, unsubscribes, complaints, whitelists) on both backends."""

from __future__ import annotations

import json
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from mailbeacon.model.clock import now_us
from mailbeacon.storage.schema import soft_bounces, suppressions
from tests.support import Service, SmtpRelay

D1 = "Fri, 21 Oct 2011 11:02:55 GMT"
D1_US = 1319194975 * 1_000_000
BASE = "http://127.0.0.1:8080/v3/example.com"  # the public URL (--http by default)


@pytest.fixture
def client(service: Service) -> httpx.AsyncClient:
    """The service's authenticated API client."""
    return service.client  # type: ignore[no-any-return]


def rows(service: Service, kind: str | None = None) -> list[tuple[str, str, str, str, str]]:
    """(kind, address, tag, code, error) of example.com's suppressions, sorted."""
    with service.runtime.db.read() as conn:
        query = select(suppressions).where(suppressions.c.domain == "example.com")
        if kind:
            query = query.where(suppressions.c.kind == kind)
        return sorted((r.kind, r.address, r.tag, r.code, r.error) for r in conn.execute(query))


async def items(client: httpx.AsyncClient, path: str, **params: Any) -> list[dict[str, Any]]:
    r = await client.get(path, params=params)
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


async def walk(client: httpx.AsyncClient, url: str, direction: str, key: str) -> list[str]:
    """Follow `direction` paging URLs until an empty page; the values seen, in order."""
    seen: list[str] = []
    for _ in range(100):
        r = await client.get(url)
        assert r.status_code == 200, r.text
        page = r.json()
        if not page["items"]:
            return seen
        values = [item[key] for item in page["items"]]
        seen += values if direction == "next" else values[::-1]
        url = page["paging"][direction]
    raise AssertionError("paging did not end")


# Per list: a form that adds alice, the item it then shows, and the removal messages.
LISTS: list[tuple[str, dict[str, Any], dict[str, Any], str, str]] = [
    ("bounces", {"address": "alice@example.org", "code": "551", "error": "No such user",
                 "created_at": D1},
     {"address": "alice@example.org", "code": "551", "error": "No such user",
      "created_at": D1},
     "Bounced address has been removed",
     "Bounced addresses for this domain have been removed"),
    ("unsubscribes", {"address": "alice@example.org", "tag": ["Promo", "news"],
                      "created_at": D1},
     {"address": "alice@example.org", "tags": ["news", "promo"], "created_at": D1},
     "Unsubscribe event has been removed",
     "Unsubscribed addresses for this domain have been removed"),
    ("complaints", {"address": "alice@example.org", "created_at": D1},
     {"address": "alice@example.org", "created_at": D1},
     "Spam complaint has been removed",
     "Complaint addresses for this domain have been removed"),
    ("whitelists", {"address": "alice@example.org", "reason": "VIP", "created_at": D1},
     {"type": "address", "value": "alice@example.org", "reason": "VIP", "createdAt": D1},
     "Whitelist address/domain has been removed",
     "Whitelist addresses/domains for this domain have been removed"),
]


@pytest.mark.parametrize(("name", "form", "item", "removed", "removed_all"), LISTS)
async def test_add_get_list_delete(service: Service, client: httpx.AsyncClient, name: str,
                                   form: dict[str, Any], item: dict[str, Any], removed: str,
                                   removed_all: str) -> None:
    path = f"/v3/example.com/{name}"
    r = await client.post(path, data=form)
    assert r.status_code == 200, r.text
    assert r.json()["message"] == f"1 address has been added to the {name} table"
    assert r.json()["address"] == "alice@example.org"
    assert (await client.get(f"{path}/alice@example.org")).json() == item
    assert await items(client, path) == [item]

    r = await client.delete(f"{path}/alice@example.org")
    assert r.status_code == 200
    assert r.json()["message"] == removed and r.json()["address"] == "alice@example.org"
    r = await client.get(f"{path}/alice@example.org")
    assert r.status_code == 404
    assert r.json() == {"message": f"Address not found in {name} table"}
    r = await client.delete(f"{path}/alice@example.org")
    assert r.status_code == 404
    assert r.json() == {"message": f"Address not found in {name} table"}

    # Delete all: only this list of this domain.
    await service.add_domain("other.example.com")
    for who in ("a@example.org", "b@example.org"):
        assert (await client.post(path, data={**form, "address": who})).status_code == 200
    assert (await client.post("/v3/other.example.com/" + name,
                              data={**form, "address": "c@example.org"})).status_code == 200
    other = "complaints" if name != "complaints" else "bounces"
    assert (await client.post(f"/v3/example.com/{other}",
                              data={"address": "d@example.org"})).status_code == 200
    r = await client.delete(path)
    assert r.status_code == 200 and r.json() == {"message": removed_all}
    assert await items(client, path) == []
    assert len(await items(client, f"/v3/other.example.com/{name}")) == 1
    assert len(await items(client, f"/v3/example.com/{other}")) == 1
    r = await client.delete(path)  # already empty: still fine
    assert r.status_code == 200


async def test_defaults(client: httpx.AsyncClient) -> None:
    before = now_us() // 1_000_000 * 1_000_000
    for name in ("bounces", "unsubscribes", "complaints", "whitelists"):
        r = await client.post(f"/v3/example.com/{name}", data={"address": "bob@example.org"})
        assert r.status_code == 200, r.text
    bounce = (await client.get("/v3/example.com/bounces/bob@example.org")).json()
    assert (bounce["code"], bounce["error"]) == ("550", "")
    assert parsedate_to_datetime(bounce["created_at"]).timestamp() * 1_000_000 >= before
    unsub = (await client.get("/v3/example.com/unsubscribes/bob@example.org")).json()
    assert unsub["tags"] == ["*"]
    allowed = (await client.get("/v3/example.com/whitelists/bob@example.org")).json()
    assert allowed["reason"] == "" and allowed["type"] == "address"


async def test_readding_keeps_created_at_and_updates_details(service: Service,
                                                             client: httpx.AsyncClient) -> None:
    await client.post("/v3/example.com/bounces", data={"address": "a@example.org",
                                                       "created_at": D1, "error": "old"})
    await client.post("/v3/example.com/bounces", data={"address": "a@example.org",
                                                       "code": "552", "error": "full"})
    item = (await client.get("/v3/example.com/bounces/a@example.org")).json()
    assert item == {"address": "a@example.org", "code": "552", "error": "full",
                    "created_at": D1}


async def test_addresses_are_case_insensitive(service: Service,
                                              client: httpx.AsyncClient) -> None:
    r = await client.post("/v3/example.com/bounces", data={"address": "Alice@Example.ORG"})
    assert r.json()["address"] == "alice@example.org"
    assert rows(service) == [("bounce", "alice@example.org", "", "550", "")]
    r = await client.get("/v3/example.com/bounces/ALICE@example.org")
    assert r.status_code == 200 and r.json()["address"] == "alice@example.org"
    r = await client.post("/v3/example.com/bounces", data={"address": "ALICE@example.org",
                                                           "error": "again"})
    assert rows(service) == [("bounce", "alice@example.org", "", "550", "again")]
    assert [i["address"] for i in await items(client, "/v3/example.com/bounces",
                                              term="ALI")] == ["alice@example.org"]
    r = await client.delete("/v3/example.com/bounces/aLiCe@EXAMPLE.org")
    assert r.status_code == 200
    assert rows(service) == []


async def test_unsubscribe_scopes_are_gathered_per_address(service: Service,
                                                           client: httpx.AsyncClient) -> None:
    path = "/v3/example.com/unsubscribes"
    await client.post(path, data={"address": "a@example.org", "tag": "promo"})
    await client.post(path, data={"address": "a@example.org", "tag": ["*", "News"]})
    await client.post(path, data={"address": "a@example.org", "tag": "list:<Weekly.Example>"})
    await client.post(path, data={"address": "b@example.org"})
    assert await items(client, path) == [
        {"address": "a@example.org", "tags": ["*", "list:weekly.example", "news", "promo"],
         "created_at": (await items(client, path))[0]["created_at"]},
        {"address": "b@example.org", "tags": ["*"],
         "created_at": (await items(client, path))[1]["created_at"]},
    ]
    assert len(rows(service)) == 5

    # ?tag= removes one scope; the address stays with the others.
    r = await client.delete(f"{path}/a@example.org", params={"tag": "PROMO"})
    assert r.status_code == 200
    assert (await client.get(f"{path}/a@example.org")).json()["tags"] == [
        "*", "list:weekly.example", "news"]
    r = await client.delete(f"{path}/a@example.org", params={"tag": "promo"})
    assert r.status_code == 404
    assert r.json() == {"message": "Address not found in unsubscribes table"}
    r = await client.delete(f"{path}/a@example.org")  # every scope
    assert r.status_code == 200
    assert [i["address"] for i in await items(client, path)] == ["b@example.org"]


async def test_paging_with_unsubscribe_scopes(client: httpx.AsyncClient) -> None:
    # Many rows per address must not break one-item-per-address paging.
    path = "/v3/example.com/unsubscribes"
    body = [{"address": f"u{i}@example.org", "tags": ["*", "a", "b"]} for i in range(5)]
    r = await client.post(path, json=body)
    assert r.status_code == 200, r.text
    assert await walk(client, f"{path}?limit=2", "next", "address") == [
        f"u{i}@example.org" for i in range(5)]
    first = await items(client, path, limit=2)
    assert [i["tags"] for i in first] == [["*", "a", "b"]] * 2


async def test_whitelist_domains(service: Service, client: httpx.AsyncClient) -> None:
    path = "/v3/example.com/whitelists"
    r = await client.post(path, data={"domain": "Partner.Example", "reason": "partner"})
    assert r.status_code == 200, r.text
    assert r.json() == {"message": "1 address has been added to the whitelists table",
                        "address": "partner.example", "type": "domain",
                        "value": "partner.example"}
    r = await client.post(path, json=[{"domain": "b.example"},
                                      {"address": "x@c.example", "reason": "r"}])
    assert r.status_code == 200, r.text
    assert [(i["type"], i["value"], i["reason"]) for i in await items(client, path)] == [
        ("domain", "b.example", ""), ("domain", "partner.example", "partner"),
        ("address", "x@c.example", "r")]
    item = (await client.get(f"{path}/PARTNER.example")).json()
    assert item["type"] == "domain" and item["value"] == "partner.example"
    r = await client.delete(f"{path}/partner.example")
    assert r.status_code == 200 and r.json()["value"] == "partner.example"
    for form, words in (({"address": "a@b.example", "domain": "b.example"}, "not both"),
                        ({"reason": "x"}, "'address' or 'domain' parameter is missing"),
                        ({"domain": "not a domain"}, "not a valid domain"),
                        ({"domain": "a@b.example"}, "not a valid domain")):
        r = await client.post(path, data=form)
        assert r.status_code == 400, form
        assert words in r.json()["message"]


async def test_paging_walks_every_address_once_in_order(client: httpx.AsyncClient) -> None:
    everyone = [f"{name}@example.org" for name in
                ("a.b", "a-b", "a_b", "ab", "alpha", "beta", "delta", "gamma", "z/y", "zz")]
    r = await client.post("/v3/example.com/bounces",
                          json=[{"address": a} for a in everyone[::-1]])
    assert r.status_code == 200, r.text
    path = "/v3/example.com/bounces"
    assert await walk(client, f"{path}?limit=2", "next", "address") == sorted(everyone)
    assert await walk(client, f"{path}?page=last&limit=2", "previous", "address") \
        == sorted(everyone, reverse=True)

    r = await client.get(path, params={"limit": 2})
    assert [i["address"] for i in r.json()["items"]] == ["a-b@example.org", "a.b@example.org"]
    assert r.json()["paging"] == {
        "first": f"{BASE}/bounces?page=first&limit=2",
        "next": f"{BASE}/bounces?page=next&address=a.b%40example.org&limit=2",
        "previous": f"{BASE}/bounces?page=prev&address=a-b%40example.org&limit=2",
        "last": f"{BASE}/bounces?page=last&limit=2",
    }
    # Mailgun's clients say page=previous.
    r = await client.get(path, params={"page": "previous", "address": "beta@example.org",
                                       "limit": 2})
    assert [i["address"] for i in r.json()["items"]] == ["ab@example.org", "alpha@example.org"]
    # Past the end: an empty page whose way back leads to the last page.
    r = await client.get(path, params={"page": "next", "address": "zz@example.org"})
    assert r.json()["items"] == []
    back = await client.get(r.json()["paging"]["previous"])
    assert back.json()["items"][-1]["address"] == "zz@example.org"
    assert len(await items(client, path)) == 10  # default limit 100


async def test_term_searches_address_prefixes(client: httpx.AsyncClient) -> None:
    addresses = ["news@example.org", "newsletter@example.org", "new@example.org",
                 "a_b@example.org", "axb@example.org", "other@example.org"]
    await client.post("/v3/example.com/complaints", json=[{"address": a} for a in addresses])
    path = "/v3/example.com/complaints"
    assert await walk(client, f"{path}?term=news&limit=1", "next", "address") == [
        "news@example.org", "newsletter@example.org"]
    r = await client.get(path, params={"term": "news", "limit": 1})
    assert r.json()["paging"]["next"] == \
        f"{BASE}/complaints?page=next&address=news%40example.org&limit=1&term=news"
    # LIKE wildcards are plain characters.
    assert [i["address"] for i in await items(client, path, term="a_")] == ["a_b@example.org"]
    assert await items(client, path, term="zzz") == []


async def test_json_batch(service: Service, client: httpx.AsyncClient) -> None:
    path = "/v3/example.com/bounces"
    body = [{"address": "a@example.org", "code": 552, "error": "full", "created_at": D1},
            {"address": "B@example.org"}, {"address": "a@example.org", "code": "553"}]
    r = await client.post(path, json=body)
    assert r.status_code == 200, r.text
    assert r.json() == {"message": "2 addresses have been added to the bounces table"}
    assert rows(service) == [("bounce", "a@example.org", "", "553", ""),
                             ("bounce", "b@example.org", "", "550", "")]
    with service.runtime.db.read() as conn:
        created = conn.execute(select(suppressions.c.created_at).where(
            suppressions.c.address == "a@example.org")).scalar_one()
    assert created == D1_US


@pytest.mark.parametrize(("body", "words"), [
    ([{"address": f"u{i}@example.org"} for i in range(1001)], "too many entries: 1001"),
    ([{"address": "ok@example.org"}, {"address": "not-an-address"}],
     "entry at index 1: 'address' parameter is not a valid address: 'not-an-address'"),
    ([{"address": "ok@example.org"}, "x"], "entry at index 1: must be a JSON object"),
    ([{"address": "ok@example.org"}, {"code": "550"}],
     "entry at index 1: 'address' parameter is missing"),
    ([{"address": "ok@example.org", "created_at": "yesterday"}],
     "entry at index 0: 'created_at' must be an RFC 2822 date"),
    ([{"address": "ok@example.org", "code": "55555555555"}], "'code' must be at most 8"),
    ([{"address": "ok@example.org", "error": 5}], "'error' must be a string"),
    ({"address": "ok@example.org"}, "must be an array"),
    ([], "empty"),
])
async def test_bad_json_batches_add_nothing(service: Service, client: httpx.AsyncClient,
                                            body: Any, words: str) -> None:
    r = await client.post("/v3/example.com/bounces", json=body)
    assert r.status_code == 400, r.text
    assert words in r.json()["message"]
    assert rows(service) == []


async def test_json_limits_and_syntax(service: Service, client: httpx.AsyncClient) -> None:
    body = [{"address": f"u{i}@example.org"} for i in range(1000)]
    r = await client.post("/v3/example.com/complaints", json=body)
    assert r.status_code == 200, r.text
    assert len(rows(service)) == 1000
    r = await client.post("/v3/example.com/complaints", content=b"[{",
                          headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["message"]
    r = await client.post("/v3/example.com/unsubscribes",
                          json=[{"address": "x@example.org", "tags": ["a|b"]}])
    assert r.status_code == 400 and "entry at index 0" in r.json()["message"]
    r = await client.post("/v3/example.com/unsubscribes",
                          json=[{"address": "x@example.org", "tags": "promo", "tag": ["*"]}])
    assert r.status_code == 200
    assert (await client.get("/v3/example.com/unsubscribes/x@example.org")).json()["tags"] \
        == ["*", "promo"]


async def test_csv_import(service: Service, client: httpx.AsyncClient) -> None:
    csv_text = ("\ufeffAddress,Error,Code,Created_At,Ignored\n"
                f'a@example.org,"Mailbox full, try later",552,"{D1}",x\n'
                "\n"
                "B@Example.org,,,,\n"
                "c@example.org\n")
    r = await client.post("/v3/example.com/bounces/import",
                          files={"file": ("bounces.csv", csv_text.encode(), "text/csv")})
    assert r.status_code == 200, r.text
    assert "file uploaded successfully" in r.json()["message"]
    assert "3 addresses imported" in r.json()["message"]
    assert rows(service) == [("bounce", "a@example.org", "", "552", "Mailbox full, try later"),
                             ("bounce", "b@example.org", "", "550", ""),
                             ("bounce", "c@example.org", "", "550", "")]
    assert (await client.get("/v3/example.com/bounces/a@example.org")).json()["created_at"] \
        == D1

    csv_text = "address,tags\na@example.org,*\na@example.org,promo\nb@example.org,\n"
    r = await client.post("/v3/example.com/unsubscribes/import",
                          files={"file": ("u.csv", csv_text.encode(), "text/csv")})
    assert r.status_code == 200, r.text
    assert "2 addresses imported" in r.json()["message"]
    assert [i["tags"] for i in await items(client, "/v3/example.com/unsubscribes")] == [
        ["*", "promo"], ["*"]]

    csv_text = "reason,domain,address\nvip,,v@example.org\npartner,partner.example,\n"
    r = await client.post("/v3/example.com/whitelists/import",
                          files={"file": ("w.csv", csv_text.encode(), "text/csv")})
    assert r.status_code == 200, r.text
    assert [(i["type"], i["value"], i["reason"])
            for i in await items(client, "/v3/example.com/whitelists")] == [
        ("domain", "partner.example", "partner"), ("address", "v@example.org", "vip")]


@pytest.mark.parametrize(("csv_text", "words"), [
    ("address,code\nok@example.org,550\nbad-address,550\nok2@example.org,550\nworse,1\n",
     ["line 3: 'address' parameter is not a valid address: 'bad-address'",
      "line 5: 'address' parameter is not a valid address: 'worse'"]),
    ("address,created_at\nok@example.org,tomorrow\n", ["line 2: 'created_at'"]),
    ("address,code\nok@example.org,550,extra\n", ["line 2: 3 fields but the header has 2"]),
    ("email,code\nok@example.org,550\n", ["no 'address' column", "email, code"]),
    ("", ["the file is empty"]),
])
async def test_bad_csv_imports_nothing(service: Service, client: httpx.AsyncClient,
                                       csv_text: str, words: list[str]) -> None:
    r = await client.post("/v3/example.com/bounces/import",
                          files={"file": ("b.csv", csv_text.encode(), "text/csv")})
    assert r.status_code == 400, r.text
    for word in words:
        assert word in r.json()["message"]
    assert rows(service) == []


async def test_csv_import_needs_a_utf8_file(client: httpx.AsyncClient) -> None:
    r = await client.post("/v3/example.com/bounces/import", data={"other": "x"})
    assert r.status_code == 400 and "'file' parameter is missing" in r.json()["message"]
    r = await client.post("/v3/example.com/bounces/import", data={"file": "address\n"})
    assert r.status_code == 400 and "must be a file" in r.json()["message"]
    r = await client.post("/v3/example.com/bounces/import",
                          files={"file": ("b.csv", b"address\n\xff@example.org\n")})
    assert r.status_code == 400 and "not UTF-8" in r.json()["message"]


async def test_large_csv_import(service: Service, client: httpx.AsyncClient) -> None:
    lines = ["address,created_at"] + [f'user{i}@example.org,"{D1}"' for i in range(5000)]
    r = await client.post("/v3/example.com/complaints/import",
                          files={"file": ("c.csv", "\n".join(lines).encode(), "text/csv")})
    assert r.status_code == 200, r.text
    assert "5000 addresses imported" in r.json()["message"]
    assert len(rows(service)) == 5000


async def test_added_bounce_blocks_sending_until_removed(service: Service,
                                                         client: httpx.AsyncClient,
                                                         smtp_relay: SmtpRelay) -> None:
    r = await client.post("/v3/example.com/bounces", data={"address": "Gone@Example.org",
                                                           "error": "No such user"})
    assert r.status_code == 200
    await service.send(to="gone@example.org", subject="x", text="y")
    (failed,) = await service.wait_events(1, event="failed")
    assert failed["reason"] == "suppress-bounce"
    assert failed["recipient"] == "gone@example.org"
    assert smtp_relay.received == []

    assert (await client.delete("/v3/example.com/bounces/gone@example.org")).status_code == 200
    await service.send(to="gone@example.org", subject="x", text="y")
    await service.wait_events(1, event="delivered")


async def test_whitelisted_domain_overrides_an_added_bounce(service: Service,
                                                            client: httpx.AsyncClient) -> None:
    await client.post("/v3/example.com/bounces", data={"address": "a@partner.example"})
    await client.post("/v3/example.com/whitelists", data={"domain": "partner.example"})
    await service.send(to="a@partner.example", subject="x", text="y")
    await service.wait_events(1, event="delivered")


async def test_removing_a_bounce_resets_soft_bounces(service: Service,
                                                     client: httpx.AsyncClient) -> None:
    with service.runtime.db.write() as conn:
        conn.execute(soft_bounces.insert(), [
            {"domain": "example.com", "address": a, "count": 3, "last_at": 1}
            for a in ("a@example.org", "b@example.org", "c@example.org")])
    await client.post("/v3/example.com/bounces", json=[{"address": "a@example.org"},
                                                       {"address": "b@example.org"}])

    def counted() -> list[str]:
        with service.runtime.db.read() as conn:
            return sorted(conn.execute(select(soft_bounces.c.address)).scalars())

    assert (await client.delete("/v3/example.com/bounces/a@example.org")).status_code == 200
    assert counted() == ["b@example.org", "c@example.org"]
    assert (await client.delete("/v3/example.com/bounces")).status_code == 200
    assert counted() == []


@pytest.mark.parametrize(("method", "path", "message"), [
    ("GET", "/v3/example.com/bounces/nobody@example.org",
     "Address not found in bounces table"),
    ("GET", "/v3/example.com/unsubscribes/nobody@example.org",
     "Address not found in unsubscribes table"),
    ("GET", "/v3/example.com/complaints/nobody@example.org",
     "Address not found in complaints table"),
    ("GET", "/v3/example.com/whitelists/nobody@example.org",
     "Address not found in whitelists table"),
    ("GET", "/v3/example.com/whitelists/nowhere.example",
     "Address not found in whitelists table"),
    ("DELETE", "/v3/example.com/complaints/nobody@example.org",
     "Address not found in complaints table"),
    ("GET", "/v3/example.com/bounces/not-an-address", "Address not found in bounces table"),
    ("GET", "/v3/other.example.com/bounces", "Domain not found: other.example.com"),
    ("GET", "/v3/other.example.com/bounces/a@example.org",
     "Domain not found: other.example.com"),
    ("POST", "/v3/other.example.com/bounces", "Domain not found: other.example.com"),
    ("DELETE", "/v3/other.example.com/bounces", "Domain not found: other.example.com"),
    ("POST", "/v3/other.example.com/bounces/import", "Domain not found: other.example.com"),
    ("GET", "/v3/example.com/spam", "Not found"),
    ("GET", "/v3/example.com/blocklists/a@example.org", "Not found"),
])
async def test_not_found(client: httpx.AsyncClient, method: str, path: str,
                         message: str) -> None:
    r = await client.request(method, path, data={"address": "a@example.org"}
                             if method == "POST" else None)
    assert r.status_code == 404, r.text
    assert r.json() == {"message": message}


@pytest.mark.parametrize(("query", "words"), [
    ("limit=1001", "'limit' must be an integer from 1 to 1000"),
    ("limit=0", "'limit'"),
    ("limit=x", "'limit'"),
    ("page=sideways", "'page'"),
    ("page=next", "'address' is required"),
])
async def test_bad_list_parameters_are_400(client: httpx.AsyncClient, query: str,
                                           words: str) -> None:
    r = await client.get(f"/v3/example.com/bounces?{query}")
    assert r.status_code == 400, r.text
    assert words in r.json()["message"]


@pytest.mark.parametrize(("name", "form", "words"), [
    ("bounces", {"address": "nope"}, "'address' parameter is not a valid address: 'nope'"),
    ("bounces", {}, "'address' parameter is missing"),
    ("bounces", {"address": "a@example.org", "created_at": "soon"}, "'created_at'"),
    ("unsubscribes", {"address": "a@example.org", "tag": "x" * 129}, "Tag"),
    ("unsubscribes", {"address": "a@example.org", "tag": "list:"}, "not a valid list"),
    ("complaints", {"address": "a@@example.org"}, "not a valid address"),
])
async def test_bad_forms_are_400(service: Service, client: httpx.AsyncClient, name: str,
                                 form: dict[str, str], words: str) -> None:
    r = await client.post(f"/v3/example.com/{name}", data=form)
    assert r.status_code == 400, r.text
    assert words in r.json()["message"]
    assert rows(service) == []


async def test_limit_bounds_are_accepted(client: httpx.AsyncClient) -> None:
    await client.post("/v3/example.com/complaints",
                      content=json.dumps([{"address": "a@example.org"},
                                          {"address": "b@example.org"}]),
                      headers={"Content-Type": "application/json; charset=utf-8"})
    for limit, count in (("1", 1), ("1000", 2)):
        assert len(await items(client, "/v3/example.com/complaints", limit=limit)) == count
